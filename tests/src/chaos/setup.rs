//! What a chaos run plays with, made through the public API before any fault: an operator's
//! ACTIVE event that asks for one completed quest, its rewards (unlimited points, gems and
//! coupons of limited stock, and an item fulfillment always refuses), and signed-in players.

use crate::saga::{DAY_MS, rfc3339};
use crate::{Api, Reply};
use futures::StreamExt;
use mongo_kit::mongodb::bson::DateTime;
use serde_json::{Value, json};
use std::sync::RwLock;
use test_support::unique;

const PASSWORD: &str = "chaos horse battery staple";

/// A signed-in player whose token is renewed when it expires.
pub struct Player {
    pub id: String,
    email: String,
    token: RwLock<String>,
}

impl Player {
    pub fn token(&self) -> String {
        self.token.read().expect("never poisoned").clone()
    }

    /// Signs in again (after `token_expired`); keeps the old token if that fails.
    pub async fn sign_in_again(&self, api: &Api) {
        if let Ok(tokens) = sign_in(api, &self.email).await {
            *self.token.write().expect("never poisoned") = tokens;
        }
    }
}

/// One reward of the run's event, with what bounds it.
#[derive(Debug, Clone)]
pub struct Reward {
    pub id: String,
    pub name: &'static str,
    pub total_stock: Option<i64>,
    pub per_user_limit: i64,
    /// Share of the claim load, in percent.
    pub weight: u32,
}

pub struct Setup {
    pub api: Api,
    pub admin_token: String,
    pub event: String,
    pub rewards: Vec<Reward>,
    /// The reward the probes claim.
    pub probe_reward: Reward,
    pub players: Vec<Player>,
    pub probers: Vec<Player>,
}

impl Setup {
    pub async fn new(players: usize) -> anyhow::Result<Self> {
        let api = Api::gateway();
        let admin_email = test_support::required(test_support::ADMIN_EMAIL);
        let admin_password = test_support::required(test_support::ADMIN_PASSWORD);
        let admin_token = access_token(&api.login(&admin_email, &admin_password).await)?;
        let operator = operator(&api, &admin_token).await?;
        let event = event(&api, &operator).await?;
        let limited = (players as i64 / 2).max(10);
        let specs = [
            (
                "points",
                json!({ "type": "POINT", "amount": 5, "perUserLimit": 1000 }),
                60,
            ),
            (
                "gems",
                json!({ "type": "ITEM", "itemCode": "gem", "quantity": 1, "totalStock": limited, "perUserLimit": 1 }),
                15,
            ),
            (
                "coupons",
                json!({ "type": "COUPON", "couponTemplate": "CHAOS", "totalStock": limited / 2, "perUserLimit": 2 }),
                15,
            ),
            // Fulfillment of the instance fails every cursed sword: each claim is compensated.
            (
                "cursed",
                json!({ "type": "ITEM", "itemCode": "cursed-sword", "quantity": 1, "perUserLimit": 1000 }),
                10,
            ),
        ];
        let mut rewards = Vec::new();
        for (name, body, weight) in specs {
            rewards.push(reward(&api, &operator, &event, name, body, weight).await?);
        }
        let probe_body = json!({ "type": "POINT", "amount": 1, "perUserLimit": 1000 });
        let probe_reward = reward(&api, &operator, &event, "probe", probe_body, 0).await?;
        let players = sign_up(&api, players).await?;
        let probers = sign_up(&api, 8).await?;
        Ok(Self {
            api,
            admin_token,
            event,
            rewards,
            probe_reward,
            players,
            probers,
        })
    }

    pub fn reward(&self, id: &str) -> Option<&Reward> {
        self.rewards
            .iter()
            .chain(std::iter::once(&self.probe_reward))
            .find(|r| r.id == id)
    }
}

fn access_token(reply: &Reply) -> anyhow::Result<String> {
    anyhow::ensure!(reply.status == 200, "sign-in failed: {reply:?}");
    Ok(text(&reply.body["accessToken"]))
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

async fn sign_in(api: &Api, email: &str) -> anyhow::Result<String> {
    access_token(&api.login(email, PASSWORD).await)
}

/// A fresh OPERATOR for the run, made by the administrator.
async fn operator(api: &Api, admin_token: &str) -> anyhow::Result<String> {
    let email = format!("{}@example.com", unique("chaos-operator"));
    let registered = api.register(&email, PASSWORD).await;
    anyhow::ensure!(registered.status == 201, "operator sign-up: {registered:?}");
    let id = text(&registered.body["id"]);
    let set = api
        .call(
            reqwest::Method::PUT,
            &format!("/users/{id}/roles"),
            Some(admin_token),
            Some(json!({ "roles": ["OPERATOR"] })),
        )
        .await;
    anyhow::ensure!(set.status == 200, "making the operator: {set:?}");
    sign_in(api, &email).await
}

async fn event(api: &Api, operator: &str) -> anyhow::Result<String> {
    let now = DateTime::now().timestamp_millis();
    let created = api
        .post(
            "/events",
            Some(operator),
            json!({
                "name": unique("chaos"),
                "startsAt": rfc3339(now - DAY_MS),
                "endsAt": rfc3339(now + 2 * DAY_MS),
                "condition": { "metric": "QUEST_COMPLETED", "op": ">=", "value": 1 },
            }),
        )
        .await;
    anyhow::ensure!(created.status == 201, "creating the event: {created:?}");
    let id = text(&created.body["id"]);
    let activated = api
        .post(
            &format!("/events/{id}/status"),
            Some(operator),
            json!({ "status": "ACTIVE" }),
        )
        .await;
    anyhow::ensure!(activated.status == 200, "activating: {activated:?}");
    Ok(id)
}

async fn reward(
    api: &Api,
    operator: &str,
    event: &str,
    name: &'static str,
    body: Value,
    weight: u32,
) -> anyhow::Result<Reward> {
    let created = api
        .post(
            &format!("/events/{event}/rewards"),
            Some(operator),
            body.clone(),
        )
        .await;
    anyhow::ensure!(created.status == 201, "creating reward {name}: {created:?}");
    Ok(Reward {
        id: text(&created.body["id"]),
        name,
        total_stock: body["totalStock"].as_i64(),
        per_user_limit: body["perUserLimit"].as_i64().unwrap_or(1),
        weight,
    })
}

/// `count` new players, signed in (a few at a time: each costs two argon2 hashes).
async fn sign_up(api: &Api, count: usize) -> anyhow::Result<Vec<Player>> {
    futures::stream::iter(0..count)
        .map(|_| async {
            let email = format!("{}@example.com", unique("chaos-player"));
            let registered = api.register(&email, PASSWORD).await;
            anyhow::ensure!(registered.status == 201, "sign-up: {registered:?}");
            let token = sign_in(api, &email).await?;
            Ok(Player {
                id: text(&registered.body["id"]),
                email,
                token: RwLock::new(token),
            })
        })
        .buffer_unordered(4)
        .collect::<Vec<anyhow::Result<Player>>>()
        .await
        .into_iter()
        .collect()
}
