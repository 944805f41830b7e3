//! What the saga tests share: events and rewards made through the gateway, activity sent
//! the way a game server sends it, and the event service called directly with identity
//! assertions, as the gateway calls it.

use crate::{Api, Reply, User};
use auth_claims::{IDENTITY_HEADER, Identity, IdentityKey, Role};
use contracts::{ActivityType, Envelope, UserActivityEvent};
use messaging::{SchemaRegistry, kafka};
use mongo_kit::mongodb::bson::DateTime;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use test_support::{poll_until, unique};

pub const DAY_MS: i64 = 86_400_000;

pub fn rfc3339(ms: i64) -> String {
    DateTime::from_millis(ms).try_to_rfc3339_string().unwrap()
}

/// An ACTIVE event whose window opened two days ago, with `condition`.
pub async fn active_event(api: &Api, operator: &User, condition: Value) -> String {
    let now = DateTime::now().timestamp_millis();
    let created = api
        .post(
            "/events",
            Some(&operator.access),
            json!({
                "name": unique("event"),
                "startsAt": rfc3339(now - 2 * DAY_MS),
                "endsAt": rfc3339(now + 2 * DAY_MS),
                "condition": condition,
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_owned();
    let activated = api
        .post(
            &format!("/events/{id}/status"),
            Some(&operator.access),
            json!({ "status": "ACTIVE" }),
        )
        .await;
    assert_eq!(activated.status, 200, "{activated:?}");
    id
}

pub async fn reward(api: &Api, operator: &User, event: &str, body: Value) -> String {
    let created = api
        .post(
            &format!("/events/{event}/rewards"),
            Some(&operator.access),
            body,
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    created.body["id"].as_str().unwrap().to_owned()
}

pub async fn reward_state(api: &Api, token: &str, event: &str, reward: &str) -> Value {
    let rewards = api
        .get(&format!("/events/{event}/rewards"), Some(token))
        .await;
    assert_eq!(rewards.status, 200, "{rewards:?}");
    rewards
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == reward)
        .unwrap()
        .clone()
}

/// Activity as a game server sends it: Avro through the registry, keyed by user id.
pub struct Game {
    registry: SchemaRegistry,
    producer: rdkafka::producer::FutureProducer,
}

impl Game {
    /// A producer to the test instance's broker, encoding through its registry.
    pub fn connect() -> Self {
        Self {
            registry: SchemaRegistry::new(&test_support::registry()).unwrap(),
            producer: kafka::producer(&test_support::kafka()).unwrap(),
        }
    }

    pub async fn send(
        &self,
        user: &str,
        kind: ActivityType,
        at: i64,
        fill: impl Fn(&mut UserActivityEvent),
    ) {
        let mut envelope = Envelope::new("saga-test");
        envelope.occurred_at = at;
        let mut event = UserActivityEvent {
            envelope,
            user_id: user.to_owned(),
            activity_type: kind,
            quest_id: None,
            item_code: None,
            item_count: None,
            new_level: None,
        };
        fill(&mut event);
        self.produce(&event, None).await;
    }

    /// Produces `event`, with a `traceparent` header when given one.
    pub async fn produce(&self, event: &UserActivityEvent, traceparent: Option<&str>) {
        let topic = contracts::topics::USER_ACTIVITY;
        let payload = self.registry.encode(topic, event).await.unwrap();
        let mut record = FutureRecord::to(topic)
            .key(&event.user_id)
            .payload(&payload);
        if let Some(value) = traceparent {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: telemetry::trace::HEADER,
                value: Some(value),
            }));
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

pub async fn claim(
    api: &Api,
    token: &str,
    event: &str,
    reward: &str,
    key: &str,
    body: Value,
) -> Reply {
    api.send(
        api.request(
            Method::POST,
            &format!("/events/{event}/rewards/{reward}/claims"),
        )
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body),
    )
    .await
}

/// Polls the claim until it leaves PENDING.
pub async fn settled(api: &Api, token: &str, claim: &str) -> Value {
    poll_until(Duration::from_secs(30), "the claim to settle", || async {
        let reply = api.get(&format!("/claims/{claim}"), Some(token)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        (reply.body["status"] != "PENDING").then_some(reply.body)
    })
    .await
}

pub fn steps(claim: &Value) -> Vec<String> {
    claim["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_owned())
        .collect()
}

/// The event service called directly, as the gateway calls it, for made-up players.
pub struct Direct {
    pub api: Api,
    key: IdentityKey,
}

impl Direct {
    /// The test instance's event service.
    pub fn to_event_service() -> Self {
        Self::at(test_support::service_url("event"))
    }

    /// An event service at `base` (one a test started itself).
    pub fn at(base: impl Into<String>) -> Self {
        Self {
            api: Api::new(base),
            key: IdentityKey::new(&test_support::required(test_support::IDENTITY_SECRET).into())
                .unwrap(),
        }
    }

    pub fn assertion(&self, user: &str) -> String {
        self.assertion_as(user, &[Role::User])
    }

    /// The gateway's assertion that `user` has `roles`.
    pub fn assertion_as(&self, user: &str, roles: &[Role]) -> String {
        self.key.sign(&Identity {
            sub: user.to_owned(),
            roles: roles.to_vec(),
        })
    }

    pub async fn claim(&self, user: &str, event: &str, reward: &str, key: &str) -> Reply {
        self.api
            .send(
                self.api
                    .request(
                        Method::POST,
                        &format!("/events/{event}/rewards/{reward}/claims"),
                    )
                    .header(IDENTITY_HEADER, self.assertion(user))
                    .header("idempotency-key", key),
            )
            .await
    }

    /// A claim that may meet a dead server: `None` when no answer came.
    pub async fn try_claim(
        &self,
        user: &str,
        event: &str,
        reward: &str,
        key: &str,
    ) -> Option<Reply> {
        let request = self
            .api
            .request(
                Method::POST,
                &format!("/events/{event}/rewards/{reward}/claims"),
            )
            .header(IDENTITY_HEADER, self.assertion(user))
            .header("idempotency-key", key)
            .timeout(Duration::from_secs(10));
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let body = response.json().await.ok()?;
        Some(Reply {
            status,
            headers: Default::default(),
            body,
        })
    }

    pub async fn get(&self, user: &str, path: &str) -> Reply {
        self.api
            .send(
                self.api
                    .request(Method::GET, path)
                    .header(IDENTITY_HEADER, self.assertion(user)),
            )
            .await
    }

    /// Waits until each player's progress meets the event's condition.
    pub async fn wait_met(&self, users: &[String], event: &str) {
        for user in users {
            poll_until(
                Duration::from_secs(60),
                "progress of every player",
                || async {
                    let reply = self
                        .get(user, &format!("/events/{event}/progress/me"))
                        .await;
                    (reply.body["met"] == true).then_some(())
                },
            )
            .await;
        }
    }
}

pub async fn levelled_up(users: &[String]) {
    let game = Game::connect();
    let now = DateTime::now().timestamp_millis();
    for user in users {
        game.send(user, ActivityType::LevelUp, now, |e| e.new_level = Some(1))
            .await;
    }
}

/// An operator's ACTIVE event that asks only for level 1, and one reward of it.
pub async fn level_event(api: &Api, operator: &User, reward_body: Value) -> (String, String) {
    let event = active_event(
        api,
        operator,
        json!({ "metric": "LEVEL", "op": ">=", "value": 1 }),
    )
    .await;
    let reward = reward(api, operator, &event, reward_body).await;
    (event, reward)
}

/// The player reaches `level` in the game, and the event service has counted it.
pub async fn play_to_level(api: &Api, player: &User, event: &str, level: i32) {
    Game::connect()
        .send(
            &player.id,
            ActivityType::LevelUp,
            DateTime::now().timestamp_millis(),
            |e| e.new_level = Some(level),
        )
        .await;
    poll_until(Duration::from_secs(30), "the level to count", || async {
        let reply = api
            .get(
                &format!("/events/{event}/progress/me"),
                Some(&player.access),
            )
            .await;
        (reply.body["met"] == true).then_some(())
    })
    .await;
}

/// Moves the event to `status` as the operator.
pub async fn set_status(api: &Api, operator: &User, event: &str, status: &str) -> Reply {
    api.post(
        &format!("/events/{event}/status"),
        Some(&operator.access),
        json!({ "status": status }),
    )
    .await
}

/// (successful grants, points) in the player's inventory, read by staff.
pub async fn granted(api: &Api, staff: &User, player: &str) -> (Option<i64>, Option<i64>) {
    let inventory = api
        .get(&format!("/inventory/{player}"), Some(&staff.access))
        .await;
    assert_eq!(inventory.status, 200, "{inventory:?}");
    (
        inventory.body["grants"].as_i64(),
        inventory.body["points"].as_i64(),
    )
}

/// A claim with a fresh idempotency key and no body.
pub async fn claim_once(api: &Api, token: &str, event: &str, reward: &str) -> Reply {
    claim(api, token, event, reward, &unique("key"), json!({})).await
}
