//! The consumer of `event.grant-commands`: decides each GrantRewardCommand once, applies a
//! success to the player's holdings, and answers with a GrantResultEvent through the outbox,
//! all in the batch's transaction.
//!
//! The ledger (command ids) is what stops a *re-sent* command, which the event service sends
//! under a new message id when no result came back. Such a re-send is answered with the
//! stored decision again (same outcome, reason and coupon code), since the earlier result may
//! be what went missing. A re-delivery of one message (after a crash) is handled the same
//! way, so commands need no inbox record ([`Outcome::Repeatable`]): a write less per batch.

use crate::config::FailureConfig;
use crate::ledger::{GrantDoc, Holding, Ledger};
use contracts::{Envelope, GrantOutcome, GrantResultEvent, GrantRewardCommand, RewardType};
use messaging::consumer::{Delivery, Handler, HandlerError, Outcome};
use messaging::outbox::Outbox;
use mongo_kit::mongodb::ClientSession;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

pub const CONSUMER_GROUP: &str = "reward-fulfillment.grants";
pub const PRODUCER: &str = "reward-fulfillment";
/// The reason of a FAILED grant chosen by `failure.rate`.
pub const INJECTED_FAILURE: &str = "injected failure";

pub struct Grants {
    ledger: Ledger,
    outbox: Outbox,
    failure: Arc<FailureConfig>,
}

impl Grants {
    pub fn new(ledger: Ledger, outbox: Outbox, failure: FailureConfig) -> Self {
        Self {
            ledger,
            outbox,
            failure: Arc::new(failure),
        }
    }

    /// The decision on a command never seen before, and what it grants.
    fn decide<'c>(
        &self,
        command: &'c GrantRewardCommand,
        message_id: &str,
    ) -> (GrantDoc, Option<Holding<'c>>) {
        let roll = if self.failure.rate > 0.0 {
            rand::rng().random::<f64>()
        } else {
            1.0
        };
        let now = mongo_kit::mongodb::bson::DateTime::now().timestamp_millis();
        let decision = decide(command, &self.failure, roll, now);
        let coupon_code = match (&decision, command.coupon_template.as_deref()) {
            (Ok(Grant::Coupon), Some(template)) => Some(coupon_code(template.trim())),
            _ => None,
        };
        let (outcome, reason) = match &decision {
            Ok(_) => (GrantOutcome::Succeeded, None),
            Err(reason) => (GrantOutcome::Failed, Some(reason.clone())),
        };
        let grant = GrantDoc::new(command, message_id, outcome, reason, coupon_code);
        let holding = match (decision, &command.item_code, &grant.coupon_code) {
            (Ok(Grant::Points(points)), _, _) => Some(Holding::Points(points)),
            (Ok(Grant::Item(quantity)), Some(code), _) => Some(Holding::Item {
                code: code.trim(),
                quantity,
            }),
            (Ok(Grant::Coupon), _, Some(code)) => Some(Holding::Coupon {
                template: command
                    .coupon_template
                    .as_deref()
                    .unwrap_or_default()
                    .trim(),
                code: code.clone(),
            }),
            _ => None,
        };
        let (kind, result) = (type_label(command.reward_type), outcome_label(outcome));
        messaging::consumer::on_commit(move || {
            metrics::counter!(crate::metrics::GRANTS, "type" => kind, "outcome" => result)
                .increment(1);
        });
        (grant, holding)
    }
}

impl Handler for Grants {
    type Message = GrantRewardCommand;

    /// The batch's decisions are read in one query and written with one command per
    /// collection. Commands are taken in order, so a command re-sent within the batch is
    /// answered with the decision its first copy just got.
    async fn handle(
        &self,
        session: &mut ClientSession,
        batch: &[Delivery<GrantRewardCommand>],
    ) -> Result<Vec<Outcome>, HandlerError> {
        if self.failure.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.failure.latency_ms)).await;
        }
        let command_ids: Vec<String> = batch
            .iter()
            .map(|d| d.message.command_id.to_string())
            .collect();
        let ids: Vec<&str> = command_ids.iter().map(String::as_str).collect();
        let mut decided = self.ledger.decided(session, &ids).await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut fresh = Vec::new();
        let mut resends = Vec::new();
        let mut results = Vec::new();
        for (delivery, command_id) in batch.iter().zip(&command_ids) {
            // In the command's span: its log lines carry its trace, and so does its result.
            let outcome = async {
                let command = &delivery.message;
                if command.user_id.trim().is_empty() {
                    return Ok::<_, HandlerError>(Outcome::Invalid(format!(
                        "GrantRewardCommand {command_id} without a userId"
                    )));
                }
                if command.claim_id.trim().is_empty() {
                    return Ok(Outcome::Invalid(format!(
                        "GrantRewardCommand {command_id} without a claimId"
                    )));
                }
                let grant = match decided.get(command_id) {
                    Some(earlier) => {
                        tracing::info!(command = %command_id, claim = %command.claim_id,
                            attempt = command.attempt, outcome = outcome_label(earlier.outcome),
                            "re-sent command answered with its earlier result");
                        resends.push((command_id.as_str(), command.attempt));
                        earlier.clone()
                    }
                    None => {
                        let (grant, holding) = self.decide(command, &delivery.message_id);
                        decided.insert(command_id.clone(), grant.clone());
                        fresh.push((grant.clone(), holding));
                        grant
                    }
                };
                let result = result_of(&grant, command);
                let entry = self
                    .outbox
                    .message(&result, delivery.trace.as_ref())
                    .await
                    .map_err(|e| {
                        HandlerError::Retryable(format!("encoding a grant result: {e}"))
                    })?;
                results.push(entry);
                Ok(Outcome::Repeatable)
            }
            .instrument(delivery.span())
            .await?;
            outcomes.push(outcome);
        }
        self.ledger.record(session, &fresh).await?;
        self.ledger.count_resends(session, &resends).await?;
        self.outbox.write(session, &results).await?;
        Ok(outcomes)
    }
}

/// What a valid command grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Points(i64),
    /// Of the command's item code.
    Item(i64),
    /// From the command's template.
    Coupon,
}

/// The decision on a command never seen before: what to grant, or why it FAILS.
/// `roll` is uniform in `[0, 1)`; the grant fails by injection when it is below `failure.rate`.
/// A command past its `expiresAt` fails: the claim behind it has been (or is about to be)
/// given up on and its stock released, so granting now would oversell.
pub fn decide(
    command: &GrantRewardCommand,
    failure: &FailureConfig,
    roll: f64,
    now_ms: i64,
) -> Result<Grant, String> {
    if let Some(expires) = command.expires_at.filter(|&e| now_ms >= e) {
        return Err(format!(
            "the command expired {} ms before it arrived",
            now_ms - expires
        ));
    }
    let grant = match command.reward_type {
        RewardType::Point => match command.points {
            Some(points) if points > 0 => Grant::Points(points),
            other => {
                return Err(format!(
                    "a POINT reward needs points > 0, got {}",
                    show(other)
                ));
            }
        },
        RewardType::Item => {
            let code = command.item_code.as_deref().map(str::trim).unwrap_or("");
            if code.is_empty() {
                return Err("an ITEM reward needs an itemCode".into());
            }
            let quantity = match command.quantity {
                Some(quantity) if quantity > 0 => i64::from(quantity),
                other => {
                    return Err(format!(
                        "an ITEM reward needs quantity > 0, got {}",
                        show(other)
                    ));
                }
            };
            if failure.failing_item_codes.iter().any(|c| c.trim() == code) {
                return Err(format!("item {code} cannot be granted (failure injection)"));
            }
            Grant::Item(quantity)
        }
        RewardType::Coupon => {
            let template = command.coupon_template.as_deref().map(str::trim);
            if template.is_none_or(str::is_empty) {
                return Err("a COUPON reward needs a couponTemplate".into());
            }
            Grant::Coupon
        }
        RewardType::Unknown => {
            return Err(
                "reward type unknown to reward-fulfillment (added after this build)".into(),
            );
        }
    };
    if roll < failure.rate {
        return Err(INJECTED_FAILURE.into());
    }
    Ok(grant)
}

fn show<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

/// The result event for a decision: a fresh message, the decision's content.
fn result_of(grant: &GrantDoc, command: &GrantRewardCommand) -> GrantResultEvent {
    GrantResultEvent {
        envelope: Envelope::new(PRODUCER).correlated(grant.claim_id.clone()),
        command_id: command.command_id,
        claim_id: grant.claim_id.clone(),
        user_id: grant.user_id.clone(),
        outcome: grant.outcome,
        reason: grant.reason.clone(),
        coupon_code: grant.coupon_code.clone(),
    }
}

/// Base32 characters in a coupon code's suffix.
const SUFFIX_LEN: usize = 10;

/// `<TEMPLATE>-` and 10 random base32 characters (RFC 4648 alphabet, 50 bits; the unique
/// index catches the improbable collision, and the batch is retried with a new code).
fn coupon_code(template: &str) -> String {
    // 7 bytes encode to 12 characters, the first 10 of which carry 50 random bits.
    let bytes: [u8; 7] = rand::rng().random();
    let mut suffix = data_encoding::BASE32_NOPAD.encode(&bytes);
    suffix.truncate(SUFFIX_LEN);
    format!("{template}-{suffix}")
}

fn type_label(reward_type: RewardType) -> &'static str {
    match reward_type {
        RewardType::Point => "POINT",
        RewardType::Item => "ITEM",
        RewardType::Coupon => "COUPON",
        RewardType::Unknown => "UNKNOWN",
    }
}

fn outcome_label(outcome: GrantOutcome) -> &'static str {
    match outcome {
        GrantOutcome::Succeeded => "SUCCEEDED",
        GrantOutcome::Failed => "FAILED",
        GrantOutcome::Unknown => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn command(reward_type: RewardType) -> GrantRewardCommand {
        GrantRewardCommand {
            envelope: Envelope::new("test"),
            command_id: uuid::Uuid::new_v4(),
            claim_id: "c-1".into(),
            user_id: "u-1".into(),
            event_id: "e-1".into(),
            reward_id: "r-1".into(),
            reward_type,
            points: None,
            item_code: None,
            quantity: None,
            coupon_template: None,
            attempt: 1,
            expires_at: None,
        }
    }

    fn failing(codes: &[&str], rate: f64) -> FailureConfig {
        FailureConfig {
            rate,
            latency_ms: 0,
            failing_item_codes: codes.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn valid_commands_are_granted() {
        let none = FailureConfig::default();
        let points = GrantRewardCommand {
            points: Some(50),
            ..command(RewardType::Point)
        };
        assert_eq!(decide(&points, &none, 0.0, NOW), Ok(Grant::Points(50)));
        let item = GrantRewardCommand {
            item_code: Some("sword".into()),
            quantity: Some(2),
            ..command(RewardType::Item)
        };
        assert_eq!(decide(&item, &none, 0.0, NOW), Ok(Grant::Item(2)));
        let coupon = GrantRewardCommand {
            coupon_template: Some("WELCOME".into()),
            ..command(RewardType::Coupon)
        };
        assert_eq!(decide(&coupon, &none, 0.0, NOW), Ok(Grant::Coupon));
    }

    #[test]
    fn incomplete_or_unknown_commands_fail_with_a_reason() {
        let none = FailureConfig::default();
        let cases = [
            (command(RewardType::Unknown), "unknown"),
            (command(RewardType::Point), "points > 0"),
            (
                GrantRewardCommand {
                    points: Some(0),
                    ..command(RewardType::Point)
                },
                "points > 0, got 0",
            ),
            (
                GrantRewardCommand {
                    quantity: Some(1),
                    ..command(RewardType::Item)
                },
                "itemCode",
            ),
            (
                GrantRewardCommand {
                    item_code: Some("sword".into()),
                    quantity: Some(-1),
                    ..command(RewardType::Item)
                },
                "quantity > 0",
            ),
            (
                GrantRewardCommand {
                    coupon_template: Some("  ".into()),
                    ..command(RewardType::Coupon)
                },
                "couponTemplate",
            ),
        ];
        for (command, expected) in cases {
            let reason = decide(&command, &none, 0.5, NOW).unwrap_err();
            assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
        }
    }

    #[test]
    fn failure_injection_fails_named_items_and_the_configured_share() {
        let item = GrantRewardCommand {
            item_code: Some("cursed-sword".into()),
            quantity: Some(1),
            ..command(RewardType::Item)
        };
        let reason = decide(&item, &failing(&["cursed-sword"], 0.0), 0.99, NOW).unwrap_err();
        assert!(reason.contains("cursed-sword"), "{reason}");
        assert!(decide(&item, &failing(&["other"], 0.0), 0.0, NOW).is_ok());

        let points = GrantRewardCommand {
            points: Some(5),
            ..command(RewardType::Point)
        };
        let half = failing(&[], 0.5);
        assert_eq!(
            decide(&points, &half, 0.49, NOW),
            Err(INJECTED_FAILURE.into())
        );
        assert!(decide(&points, &half, 0.5, NOW).is_ok());
        assert!(decide(&points, &failing(&[], 1.0), 0.999_999, NOW).is_err());
        assert!(decide(&points, &failing(&[], 0.0), 0.0, NOW).is_ok());
    }

    #[test]
    fn coupon_codes_are_template_dash_ten_base32_characters() {
        let code = coupon_code("WELCOME");
        let suffix = code.strip_prefix("WELCOME-").unwrap();
        assert_eq!(suffix.len(), 10);
        assert!(
            suffix
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
            "{code}"
        );
        assert_ne!(code, coupon_code("WELCOME"));
    }

    #[test]
    fn an_expired_command_fails_whatever_it_grants() {
        let command = GrantRewardCommand {
            points: Some(5),
            expires_at: Some(1_000),
            ..command(RewardType::Point)
        };
        let reason = decide(&command, &FailureConfig::default(), 0.9, 1_500).unwrap_err();
        assert!(reason.contains("expired 500 ms"), "{reason}");
        assert!(decide(&command, &FailureConfig::default(), 0.9, 999).is_ok());
    }
}
