//! reward-fulfillment end to end, against the running test instance: grant commands produced
//! straight to `event.grant-commands` (as the event service will), grant results read back
//! from `reward.grant-results`, and inventories read through the gateway.
//!
//! The instance's fulfillment is configured with `failing_item_codes = ["cursed-sword"]`.

use contracts::{Envelope, GrantOutcome, GrantResultEvent, GrantRewardCommand, RewardType, topics};
use e2e_tests::{Api, User};
use messaging::outbox::MESSAGE_ID_HEADER;
use messaging::{SchemaRegistry, kafka};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use test_support::{poll_until, unique};

const DEADLINE: Duration = Duration::from_secs(30);

fn registry() -> Arc<SchemaRegistry> {
    Arc::new(SchemaRegistry::new(&test_support::registry()).unwrap())
}

fn command(user_id: &str, reward_type: RewardType) -> GrantRewardCommand {
    let claim_id = unique("claim");
    GrantRewardCommand {
        envelope: Envelope::new("fulfillment-test").correlated(claim_id.clone()),
        command_id: uuid::Uuid::new_v4(),
        claim_id,
        user_id: user_id.to_owned(),
        event_id: unique("event"),
        reward_id: unique("reward"),
        reward_type,
        points: None,
        item_code: None,
        quantity: None,
        coupon_template: None,
        attempt: 1,
        expires_at: None,
    }
}

fn points(user_id: &str, points: i64) -> GrantRewardCommand {
    GrantRewardCommand {
        points: Some(points),
        ..command(user_id, RewardType::Point)
    }
}

fn item(user_id: &str, code: &str, quantity: i32) -> GrantRewardCommand {
    GrantRewardCommand {
        item_code: Some(code.to_owned()),
        quantity: Some(quantity),
        ..command(user_id, RewardType::Item)
    }
}

/// The same command sent again, as the event service re-sends it: same command id, a new
/// message id, the next attempt.
fn resend(command: &GrantRewardCommand) -> GrantRewardCommand {
    GrantRewardCommand {
        envelope: Envelope::new("fulfillment-test").correlated(command.claim_id.clone()),
        attempt: command.attempt + 1,
        ..command.clone()
    }
}

/// Produces `command` as the event service does: Avro through the registry, keyed by user
/// id, with the message-id header.
async fn send(registry: &SchemaRegistry, command: &GrantRewardCommand) {
    let bytes = registry
        .encode(topics::GRANT_COMMANDS, command)
        .await
        .unwrap();
    let id = command.envelope.message_id.to_string();
    let producer = kafka::producer(&test_support::kafka()).unwrap();
    producer
        .send(
            FutureRecord::to(topics::GRANT_COMMANDS)
                .key(&command.user_id)
                .payload(&bytes)
                .headers(OwnedHeaders::new().insert(Header {
                    key: MESSAGE_ID_HEADER,
                    value: Some(id.as_bytes()),
                })),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// A reader of `reward.grant-results` from the beginning (partitions assigned, no group
/// joined, nothing committed).
struct Results {
    consumer: StreamConsumer,
    registry: Arc<SchemaRegistry>,
    seen: Vec<GrantResultEvent>,
}

impl Results {
    fn new(registry: Arc<SchemaRegistry>) -> Self {
        let consumer = kafka::consumer(&test_support::kafka(), &unique("results")).unwrap();
        let partitions = messaging::topics::all()
            .into_iter()
            .find(|t| t.name == topics::GRANT_RESULTS)
            .unwrap()
            .partitions;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topics::GRANT_RESULTS, partition, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        Self {
            consumer,
            registry,
            seen: Vec::new(),
        }
    }

    /// Waits for at least `count` results of `claim_id`; returns them all.
    async fn of_claim(&mut self, claim_id: &str, count: usize) -> Vec<GrantResultEvent> {
        let give_up = tokio::time::Instant::now() + DEADLINE;
        loop {
            let mine: Vec<GrantResultEvent> = self
                .seen
                .iter()
                .filter(|r| r.claim_id == claim_id)
                .cloned()
                .collect();
            if mine.len() >= count {
                return mine;
            }
            let remaining = give_up.saturating_duration_since(tokio::time::Instant::now());
            assert!(
                !remaining.is_zero(),
                "only {} of {count} results for claim {claim_id} after {DEADLINE:?}",
                mine.len()
            );
            if let Ok(Ok(message)) = tokio::time::timeout(remaining, self.consumer.recv()).await
                && let Some(bytes) = message.payload()
            {
                let result: GrantResultEvent = self.registry.decode(bytes).await.unwrap();
                assert_eq!(
                    message.key(),
                    Some(result.user_id.as_bytes()),
                    "results are keyed by user id"
                );
                self.seen.push(result);
            }
        }
    }
}

async fn inventory(api: &Api, user: &User) -> Value {
    let reply = api.get("/inventory/me", Some(&user.access)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

/// Polls the player's inventory until `ready` holds for it.
async fn inventory_when(
    api: &Api,
    user: &User,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    poll_until(DEADLINE, what, || async {
        let body = inventory(api, user).await;
        ready(&body).then_some(body)
    })
    .await
}

fn item_quantity(inventory: &Value, code: &str) -> Option<i64> {
    inventory["items"]
        .as_array()?
        .iter()
        .find(|i| i["itemCode"] == code)
        .and_then(|i| i["quantity"].as_i64())
}

fn assert_same_decision(results: &[GrantResultEvent], command: &GrantRewardCommand) {
    let first = &results[0];
    for result in results {
        assert_eq!(result.command_id, command.command_id);
        assert_eq!(result.user_id, command.user_id);
        assert_eq!(result.outcome, first.outcome, "{results:?}");
        assert_eq!(result.reason, first.reason, "{results:?}");
        assert_eq!(result.coupon_code, first.coupon_code, "{results:?}");
        assert_eq!(result.envelope.producer, "reward-fulfillment");
        assert_eq!(
            result.envelope.correlation_id.as_deref(),
            Some(command.claim_id.as_str())
        );
    }
    let ids: HashSet<_> = results.iter().map(|r| r.envelope.message_id).collect();
    assert_eq!(ids.len(), results.len(), "each result is a new message");
}

#[tokio::test]
async fn points_are_granted_once_however_often_the_command_is_resent() {
    let (api, registry) = (Api::gateway(), registry());
    let mut results = Results::new(registry.clone());
    let player = api.new_user().await;
    let grant = points(&player.id, 25);
    send(&registry, &grant).await;

    let body = inventory_when(&api, &player, "the points", |b| b["points"] == 25).await;
    assert_eq!(body["userId"], player.id.as_str());
    assert_eq!(body["grants"], 1);
    let first = results.of_claim(&grant.claim_id, 1).await;
    assert_eq!(first[0].outcome, GrantOutcome::Succeeded, "{first:?}");
    assert_eq!(first[0].reason, None);

    let (second, third) = (resend(&grant), resend(&resend(&grant)));
    assert_eq!(third.attempt, 3);
    send(&registry, &second).await;
    send(&registry, &third).await;
    // A result is written in the transaction that handled its command: with three results
    // out, both re-sends have been handled.
    let all = results.of_claim(&grant.claim_id, 3).await;
    assert_same_decision(&all, &grant);
    let body = inventory(&api, &player).await;
    assert_eq!(body["points"], 25, "granted once: {body}");
    assert_eq!(body["grants"], 1, "{body}");
}

#[tokio::test]
async fn a_cursed_sword_fails_with_a_reason_naming_it_and_is_not_granted() {
    let (api, registry) = (Api::gateway(), registry());
    let mut results = Results::new(registry.clone());
    let player = api.new_user().await;
    let cursed = item(&player.id, "cursed-sword", 1);
    // An item code that could not be a BSON field name.
    let potion = item(&player.id, "potion.small$v2", 2);
    send(&registry, &cursed).await;
    send(&registry, &potion).await;

    let failed = results.of_claim(&cursed.claim_id, 1).await;
    assert_eq!(failed[0].outcome, GrantOutcome::Failed, "{failed:?}");
    let reason = failed[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("cursed-sword"), "{reason}");
    assert_eq!(failed[0].coupon_code, None);
    let granted = results.of_claim(&potion.claim_id, 1).await;
    assert_eq!(granted[0].outcome, GrantOutcome::Succeeded, "{granted:?}");

    let body = inventory(&api, &player).await;
    assert_eq!(item_quantity(&body, "potion.small$v2"), Some(2), "{body}");
    assert_eq!(item_quantity(&body, "cursed-sword"), None, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["grants"], 1, "{body}");

    // A re-sent FAILED command fails again, and grants nothing.
    send(&registry, &resend(&cursed)).await;
    let again = results.of_claim(&cursed.claim_id, 2).await;
    assert_same_decision(&again, &cursed);
    assert_eq!(
        item_quantity(&inventory(&api, &player).await, "cursed-sword"),
        None
    );
}

#[tokio::test]
async fn a_coupon_is_issued_once_with_the_code_its_result_carries() {
    let (api, registry) = (Api::gateway(), registry());
    let mut results = Results::new(registry.clone());
    let player = api.new_user().await;
    let coupon = GrantRewardCommand {
        coupon_template: Some("WELCOME10".into()),
        ..command(&player.id, RewardType::Coupon)
    };
    send(&registry, &coupon).await;

    let first = results.of_claim(&coupon.claim_id, 1).await;
    assert_eq!(first[0].outcome, GrantOutcome::Succeeded, "{first:?}");
    let code = first[0].coupon_code.clone().expect("a coupon code");
    let suffix = code
        .strip_prefix("WELCOME10-")
        .unwrap_or_else(|| panic!("{code}"));
    assert_eq!(suffix.len(), 10, "{code}");
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)),
        "{code}"
    );

    let body = inventory(&api, &player).await;
    let coupons = body["coupons"].as_array().unwrap();
    assert_eq!(coupons.len(), 1, "{body}");
    assert_eq!(coupons[0]["code"], code.as_str());
    assert_eq!(coupons[0]["template"], "WELCOME10");
    assert_eq!(coupons[0]["claimId"], coupon.claim_id.as_str());
    assert!(
        coupons[0]["issuedAt"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    send(&registry, &resend(&coupon)).await;
    let both = results.of_claim(&coupon.claim_id, 2).await;
    assert_same_decision(&both, &coupon);
    let body = inventory(&api, &player).await;
    assert_eq!(body["coupons"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["grants"], 1, "{body}");
}

#[tokio::test]
async fn operators_and_auditors_read_any_inventory_and_players_only_their_own() {
    let (api, registry) = (Api::gateway(), registry());
    let player = api.new_user().await;
    send(&registry, &points(&player.id, 7)).await;
    inventory_when(&api, &player, "the points", |b| b["points"] == 7).await;

    let path = format!("/inventory/{}", player.id);
    for roles in [["OPERATOR"], ["AUDITOR"]] {
        let reader = api.user_with_roles(&roles).await;
        let reply = api.get(&path, Some(&reader.access)).await;
        assert_eq!(reply.status, 200, "{roles:?}: {reply:?}");
        assert_eq!(reply.body["userId"], player.id.as_str());
        assert_eq!(reply.body["points"], 7);
    }
    let admin = api.admin().await;
    assert_eq!(api.get(&path, Some(&admin.access)).await.status, 200);

    let other = api.new_user().await;
    let reply = api.get(&path, Some(&other.access)).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert_eq!(reply.code(), "forbidden");
    // A player never granted anything holds nothing.
    let empty = inventory(&api, &other).await;
    assert_eq!(empty["points"], 0);
    assert_eq!(empty["grants"], 0);
    assert_eq!(empty["items"], serde_json::json!([]));
    assert_eq!(empty["coupons"], serde_json::json!([]));

    // Straight to the service, bypassing the gateway: no identity, no inventory.
    let direct = Api::new(test_support::service_url("reward-fulfillment"));
    for path in ["/inventory/me".to_owned(), path] {
        let reply = direct.get(&path, Some(&player.access)).await;
        assert_eq!(reply.status, 401, "{path}: {reply:?}");
        assert!(reply.content_type().starts_with("application/problem+json"));
    }
}

#[tokio::test]
async fn a_command_without_a_user_or_claim_is_dead_lettered() {
    let (api, registry) = (Api::gateway(), registry());
    let mut nobody = points("", 5);
    nobody.user_id = String::new();
    let mut unclaimed = points(&unique("player"), 5);
    unclaimed.claim_id = String::new();
    send(&registry, &nobody).await;
    send(&registry, &unclaimed).await;

    let admin = api.admin().await;
    let path = format!(
        "/dead-letters/reward-fulfillment?topic={}&size=100",
        topics::GRANT_COMMANDS
    );
    for command in [&nobody, &unclaimed] {
        let id = command.command_id.to_string();
        let letter = poll_until(DEADLINE, "the dead letter", || async {
            let reply = api.get(&path, Some(&admin.access)).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            reply.body["items"]
                .as_array()?
                .iter()
                .find(|l| l["error"].as_str().is_some_and(|e| e.contains(&id)))
                .cloned()
        })
        .await;
        assert_eq!(letter["errorClass"], "INVALID_CONTENT", "{letter}");
        assert_eq!(letter["group"], "reward-fulfillment.grants", "{letter}");
    }
}
