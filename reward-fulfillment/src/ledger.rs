//! `reward_db`: the grant ledger and the holdings it produced.
//!
//! - `grants`: one document per GrantRewardCommand, `_id` = commandId, holding the decision
//!   (outcome, reason, coupon code). The unique `_id` is what makes a grant happen once per
//!   command however often the command is re-sent, and the stored decision is what a re-send
//!   is answered with.
//! - `wallets`: one document per player, `_id` = userId: the points balance and the number of
//!   successful grants.
//! - `items`: one document per (userId, itemCode), unique on the pair. Item codes are values,
//!   never field names, so any code (with dots, dollars, colons) is safe.
//! - `coupons`: one document per issued coupon, `_id` = commandId, with a unique `code`.
//!
//! Holdings change only inside the consumer's transaction, together with the grant record,
//! the inbox entry and the outbox message, so they always agree with the ledger.

use contracts::{GrantOutcome, GrantRewardCommand, RewardType};
use futures::TryStreamExt;
use http_api::inventory::{Inventory, IssuedCoupon, ItemHolding};
use mongo_kit::mongodb::bson::{DateTime, doc};
use mongo_kit::mongodb::error::Error as MongoError;
use mongo_kit::mongodb::options::IndexOptions;
use mongo_kit::mongodb::{ClientSession, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One command's decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantDoc {
    /// The command id.
    #[serde(rename = "_id")]
    pub command_id: String,
    pub claim_id: String,
    pub user_id: String,
    pub event_id: String,
    pub reward_id: String,
    pub reward_type: RewardType,
    pub points: Option<i64>,
    pub item_code: Option<String>,
    pub quantity: Option<i32>,
    pub coupon_template: Option<String>,
    pub outcome: GrantOutcome,
    pub reason: Option<String>,
    pub coupon_code: Option<String>,
    /// The attempt and message id of the command that was decided.
    pub attempt: i32,
    pub message_id: String,
    pub decided_at: DateTime,
    /// How many re-sends (and re-deliveries) were answered from this record, and the latest
    /// attempt seen.
    #[serde(default)]
    pub resends: i64,
    #[serde(default)]
    pub last_attempt: i32,
}

impl GrantDoc {
    pub fn new(
        command: &GrantRewardCommand,
        message_id: &str,
        outcome: GrantOutcome,
        reason: Option<String>,
        coupon_code: Option<String>,
    ) -> Self {
        Self {
            command_id: command.command_id.to_string(),
            claim_id: command.claim_id.clone(),
            user_id: command.user_id.clone(),
            event_id: command.event_id.clone(),
            reward_id: command.reward_id.clone(),
            reward_type: command.reward_type,
            points: command.points,
            item_code: command.item_code.clone(),
            quantity: command.quantity,
            coupon_template: command.coupon_template.clone(),
            outcome,
            reason,
            coupon_code,
            attempt: command.attempt,
            message_id: message_id.to_owned(),
            decided_at: DateTime::now(),
            resends: 0,
            last_attempt: command.attempt,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WalletDoc {
    #[serde(rename = "_id")]
    user_id: String,
    #[serde(default)]
    points: i64,
    #[serde(default)]
    grants: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemDoc {
    user_id: String,
    item_code: String,
    quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CouponDoc {
    /// The command that issued it.
    #[serde(rename = "_id")]
    command_id: String,
    code: String,
    template: String,
    user_id: String,
    claim_id: String,
    issued_at: DateTime,
}

/// What a successful grant adds to a player's holdings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding<'a> {
    Points(i64),
    Item { code: &'a str, quantity: i64 },
    Coupon { template: &'a str, code: String },
}

#[derive(Clone)]
pub struct Ledger {
    db: Database,
    grants: Collection<GrantDoc>,
    wallets: Collection<WalletDoc>,
    items: Collection<ItemDoc>,
    coupons: Collection<CouponDoc>,
}

impl Ledger {
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            grants: db.collection("grants"),
            wallets: db.collection("wallets"),
            items: db.collection("items"),
            coupons: db.collection("coupons"),
        }
    }

    pub async fn ensure_indexes(&self) -> Result<(), MongoError> {
        let named = |name: &str| IndexOptions::builder().name(name.to_owned()).build();
        let unique = |name: &str| {
            IndexOptions::builder()
                .name(name.to_owned())
                .unique(true)
                .build()
        };
        self.grants
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "claimId": 1 })
                    .options(named("claim"))
                    .build(),
            )
            .await?;
        self.items
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "userId": 1, "itemCode": 1 })
                    .options(unique("user_item"))
                    .build(),
            )
            .await?;
        self.coupons
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "code": 1 })
                    .options(unique("code"))
                    .build(),
            )
            .await?;
        self.coupons
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "userId": 1, "issuedAt": 1 })
                    .options(named("user_issued"))
                    .build(),
            )
            .await?;
        Ok(())
    }

    /// The decisions already taken for any of `command_ids`, by command id.
    pub async fn decided(
        &self,
        session: &mut ClientSession,
        command_ids: &[&str],
    ) -> Result<HashMap<String, GrantDoc>, MongoError> {
        let grants = mongo_kit::find_all(
            &self.grants,
            doc! { "_id": { "$in": command_ids } },
            session,
        )
        .await?;
        Ok(grants
            .into_iter()
            .map(|g| (g.command_id.clone(), g))
            .collect())
    }

    /// Counts re-sent commands (command id, attempt) on their decisions.
    pub async fn count_resends(
        &self,
        session: &mut ClientSession,
        resends: &[(&str, i32)],
    ) -> Result<(), MongoError> {
        let statements = resends
            .iter()
            .map(|(command_id, attempt)| {
                mongo_kit::update_statement(
                    doc! { "_id": command_id },
                    doc! { "$inc": { "resends": 1_i64 }, "$max": { "lastAttempt": attempt } },
                    false,
                )
            })
            .collect();
        mongo_kit::update_each(&self.db, "grants", statements, session).await?;
        Ok(())
    }

    /// Records decisions (and, for successes, what they granted) in the caller's
    /// transaction: one write per collection for the whole batch.
    pub async fn record(
        &self,
        session: &mut ClientSession,
        decisions: &[(GrantDoc, Option<Holding<'_>>)],
    ) -> Result<(), MongoError> {
        if decisions.is_empty() {
            return Ok(());
        }
        self.grants
            .insert_many(decisions.iter().map(|(grant, _)| grant))
            .session(&mut *session)
            .await?;
        let now = DateTime::now();
        let (mut wallets, mut items, mut coupons) = (Vec::new(), Vec::new(), Vec::new());
        for (grant, holding) in decisions {
            let Some(holding) = holding else { continue };
            let points = match holding {
                Holding::Points(points) => *points,
                _ => 0,
            };
            wallets.push(mongo_kit::update_statement(
                doc! { "_id": &grant.user_id },
                doc! {
                    "$inc": { "points": points, "grants": 1_i64 },
                    "$set": { "updatedAt": now },
                },
                true,
            ));
            match holding {
                Holding::Points(_) => {}
                Holding::Item { code, quantity } => items.push(mongo_kit::update_statement(
                    doc! { "userId": &grant.user_id, "itemCode": code },
                    doc! { "$inc": { "quantity": quantity }, "$set": { "updatedAt": now } },
                    true,
                )),
                Holding::Coupon { template, code } => coupons.push(CouponDoc {
                    command_id: grant.command_id.clone(),
                    code: code.clone(),
                    template: (*template).to_owned(),
                    user_id: grant.user_id.clone(),
                    claim_id: grant.claim_id.clone(),
                    issued_at: now,
                }),
            }
        }
        mongo_kit::update_each(&self.db, "wallets", wallets, session).await?;
        mongo_kit::update_each(&self.db, "items", items, session).await?;
        if !coupons.is_empty() {
            self.coupons
                .insert_many(coupons)
                .session(&mut *session)
                .await?;
        }
        Ok(())
    }

    /// A player's holdings; all zeros for a player never granted anything.
    pub async fn inventory(&self, user_id: &str) -> Result<Inventory, MongoError> {
        let wallet = self.wallets.find_one(doc! { "_id": user_id }).await?;
        let items: Vec<ItemDoc> = self
            .items
            .find(doc! { "userId": user_id })
            .sort(doc! { "itemCode": 1 })
            .await?
            .try_collect()
            .await?;
        let coupons: Vec<CouponDoc> = self
            .coupons
            .find(doc! { "userId": user_id })
            .sort(doc! { "issuedAt": 1, "_id": 1 })
            .await?
            .try_collect()
            .await?;
        let (points, grants) = wallet.map_or((0, 0), |w| (w.points, w.grants));
        Ok(Inventory {
            user_id: user_id.to_owned(),
            points,
            items: items
                .into_iter()
                .map(|i| ItemHolding {
                    item_code: i.item_code,
                    quantity: i.quantity,
                })
                .collect(),
            coupons: coupons
                .into_iter()
                .map(|c| IssuedCoupon {
                    code: c.code,
                    template: c.template,
                    claim_id: c.claim_id,
                    issued_at: c.issued_at.try_to_rfc3339_string().unwrap_or_default(),
                })
                .collect(),
            grants: u64::try_from(grants).unwrap_or_default(),
        })
    }
}
