//! Trace context across HTTP and Kafka: one claim's trace id is followed through every hop
//! (the gateway's access log, the event service's, the grant command on Kafka, fulfillment's
//! handling of it, the grant result on Kafka, and the event service's handling of that), and
//! game activity that arrives with a `traceparent` header continues the game server's trace.

use contracts::{ActivityType, Envelope, GrantResultEvent, GrantRewardCommand, UserActivityEvent};
use e2e_tests::saga::{Game, level_event, play_to_level, settled};
use e2e_tests::{Api, header, read_topic};
use messaging::SchemaRegistry;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use telemetry::trace::{HEADER, TraceParent};
use test_support::{poll_until, unique};

fn log_of(service: &str) -> PathBuf {
    PathBuf::from(test_support::required(test_support::CONFIG_DIR))
        .join("../logs")
        .join(format!("{service}.log"))
}

/// Waits for a JSON line of `service`'s log that `matches`.
async fn logged(service: &str, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    poll_until(Duration::from_secs(30), what, || async {
        std::fs::read_to_string(log_of(service))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| matches(line))
    })
    .await
}

/// A line that a consumer wrote for a message of `topic` in trace `trace_id`.
async fn handled(service: &str, topic: &str, trace_id: &str) -> Value {
    logged(service, &format!("{service} to handle {topic}"), |l| {
        l["message"] == "message handled"
            && l["span"]["topic"] == topic
            && l["span"]["trace_id"] == trace_id
    })
    .await
}

/// The record of `topic` whose `traceparent` is in trace `trace_id`.
async fn record_in_trace(topic: &str, trace_id: &str) -> OwnedMessage {
    let in_trace = |m: &OwnedMessage| {
        header(m, HEADER)
            .and_then(|v| TraceParent::parse(&v))
            .is_some_and(|t| t.trace_id() == trace_id)
    };
    let seen = read_topic(topic, Duration::from_secs(30), |seen| {
        seen.iter().any(in_trace)
    })
    .await;
    seen.into_iter().find(in_trace).unwrap()
}

#[tokio::test]
async fn one_claim_s_trace_id_runs_from_the_gateway_through_fulfillment_and_back() {
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let player = api.new_user().await;
    let (event, reward) =
        level_event(&api, &operator, json!({ "type": "POINT", "amount": 3 })).await;
    play_to_level(&api, &player, &event, 1).await;

    // The player sends no trace: the gateway starts one, and its access log names it.
    let request_id = unique("traced-claim");
    let path = format!("/events/{event}/rewards/{reward}/claims");
    let reply = api
        .send(
            api.request(Method::POST, &path)
                .bearer_auth(&player.access)
                .header("idempotency-key", unique("key"))
                .header("x-request-id", &request_id)
                .json(&json!({})),
        )
        .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let claim = reply.body["id"].as_str().unwrap().to_owned();
    let access = logged("gateway", "the gateway's access-log line", |l| {
        l["span"]["request_id"] == request_id.as_str()
            && l["message"] == "finished processing request"
    })
    .await;
    let trace_id = access["span"]["trace_id"].as_str().unwrap().to_owned();
    assert!(TraceParent::parse(&format!("00-{trace_id}-00f067aa0ba902b7-01")).is_some());

    // The event service served it in the same trace.
    logged("event", "the event service's access-log line", |l| {
        l["span"]["trace_id"] == trace_id.as_str() && l["span"]["path"] == path.as_str()
    })
    .await;

    // The grant command carries the trace to Kafka, and fulfillment continues it.
    let registry = SchemaRegistry::new(&test_support::registry()).unwrap();
    let command = record_in_trace(contracts::topics::GRANT_COMMANDS, &trace_id).await;
    let command: GrantRewardCommand = registry.decode(command.payload().unwrap()).await.unwrap();
    assert_eq!(command.claim_id, claim);
    handled(
        "reward-fulfillment",
        contracts::topics::GRANT_COMMANDS,
        &trace_id,
    )
    .await;

    // The result carries it back, and the event service settles the claim in it.
    let result = record_in_trace(contracts::topics::GRANT_RESULTS, &trace_id).await;
    let result: GrantResultEvent = registry.decode(result.payload().unwrap()).await.unwrap();
    assert_eq!(result.claim_id, claim);
    handled("event", contracts::topics::GRANT_RESULTS, &trace_id).await;
    let settled = settled(&api, &player.access, &claim).await;
    assert_eq!(settled["status"], "SUCCEEDED");
}

#[tokio::test]
async fn game_activity_sent_with_a_traceparent_is_handled_in_the_game_server_s_trace() {
    let trace = TraceParent::root();
    let activity = UserActivityEvent {
        envelope: Envelope::new("traced-game-server"),
        user_id: unique("traced-player"),
        activity_type: ActivityType::Login,
        quest_id: None,
        item_code: None,
        item_count: None,
        new_level: None,
    };
    Game::connect()
        .produce(&activity, Some(&trace.to_string()))
        .await;
    let line = handled("event", contracts::topics::USER_ACTIVITY, trace.trace_id()).await;
    assert_eq!(
        line["span"]["message_id"],
        activity.envelope.message_id.to_string()
    );
}
