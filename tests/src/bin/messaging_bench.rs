//! Throughput and latency of the messaging backbone on the running infrastructure.
//!
//! `messaging_bench relay|consumer [count] [rate]`, pointed at an instance with
//! `eval "$(./dev env)"`. Prints one line of figures; states where MongoDB keeps its data.
//!
//! - `relay`: writes `count` outbox entries at `rate` per second (10 per transaction) while
//!   an outbox relay runs, then reports the relay's throughput and the publish latency
//!   (commit of the entry to the broker's acknowledgement) percentiles.
//! - `consumer`: produces `count` activity events to a 6-partition topic, then runs the
//!   consumer runner (batches, inbox, one effect document per message) over them and reports
//!   messages per second.

use contracts::{ActivityType, Envelope, UserActivityEvent};
use e2e_tests::effects;
use messaging::outbox::{Outbox, OutboxEntry, Relay, RelayConfig};
use messaging::topics::{TopicSpec, dead_letter_topic};
use messaging::{SchemaRegistry, kafka};
use mongo_kit::Mongo;
use mongo_kit::mongodb::bson::{Document, doc};
use rdkafka::producer::FutureRecord;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    telemetry::init_test_logging();
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "relay".into());
    let count: usize = args.next().map_or(20_000, |n| n.parse().unwrap());
    let rate: usize = args.next().map_or(2_000, |n| n.parse().unwrap());
    let mongo = Mongo::connect(&test_support::mongo("bench"), "messaging-bench")
        .await
        .unwrap();
    let registry = Arc::new(SchemaRegistry::new(&test_support::registry()).unwrap());
    let placement = e2e_tests::bench::mongo_placement(&mongo.client().database("admin")).await;
    match mode.as_str() {
        "relay" => relay(&mongo, registry, count, rate, &placement).await,
        "consumer" => consumer(&mongo, registry, count, &placement).await,
        other => panic!("unknown mode {other}: relay | consumer"),
    }
    mongo.db().drop().await.unwrap();
}

async fn relay(
    mongo: &Mongo,
    registry: Arc<SchemaRegistry>,
    count: usize,
    rate: usize,
    placement: &str,
) {
    let topic = test_support::unique("bench_relay");
    kafka::ensure_topics(&test_support::kafka(), &[TopicSpec::new(&topic, 6)])
        .await
        .unwrap();
    let config = RelayConfig::default();
    Relay::ensure_indexes(mongo.db(), &config).await.unwrap();
    let stop = CancellationToken::new();
    let producer = kafka::producer(&test_support::kafka()).unwrap();
    let relay = tokio::spawn(Relay::new(mongo.db(), producer, config, "bench").run(stop.clone()));

    let outbox = Outbox::new(mongo.db(), registry, "bench");
    let started = Instant::now();
    let per_txn = 10;
    let mut written = 0;
    while written < count {
        let mut batch = Vec::with_capacity(per_txn);
        for _ in 0..per_txn.min(count - written) {
            let mut entry = outbox.message(&event(written % 1000), None).await.unwrap();
            entry.topic = topic.clone();
            batch.push(entry);
            written += 1;
        }
        let mut session = mongo.client().start_session().await.unwrap();
        session.start_transaction().await.unwrap();
        outbox.write(&mut session, &batch).await.unwrap();
        session.commit_transaction().await.unwrap();
        // Hold the rate: entries are due at written / rate seconds.
        let due = Duration::from_secs_f64(written as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    let wrote_for = started.elapsed();
    let entries = mongo.db().collection::<OutboxEntry>("outbox");
    loop {
        assert!(
            !relay.is_finished(),
            "the relay stopped before publishing everything"
        );
        let done = entries
            .count_documents(doc! { "published": true })
            .await
            .unwrap();
        if done as usize >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_published = started.elapsed();
    stop.cancel();
    relay.await.unwrap();

    let mut latencies: Vec<i64> = Vec::with_capacity(count);
    let mut cursor = entries.find(doc! {}).await.unwrap();
    use futures::StreamExt;
    while let Some(entry) = cursor.next().await {
        let entry = entry.unwrap();
        let published = entry.published_at.unwrap().timestamp_millis();
        latencies.push(published - entry.created_at.timestamp_millis());
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "relay: {count} entries written at {:.0}/s (target {rate}/s) in {wrote_for:.1?}, all published after {all_published:.1?}; \
         publish latency p50 {} ms, p99 {} ms, max {} ms; MongoDB on {placement}",
        count as f64 / wrote_for.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
}

async fn consumer(mongo: &Mongo, registry: Arc<SchemaRegistry>, count: usize, placement: &str) {
    let kafka_config = test_support::kafka();
    let topic = test_support::unique("bench_consumer");
    kafka::ensure_topics(
        &kafka_config,
        &[
            TopicSpec::new(&topic, 6),
            TopicSpec::new(dead_letter_topic(&topic), 1),
        ],
    )
    .await
    .unwrap();
    let producer = kafka::producer(&kafka_config).unwrap();
    let produced = Instant::now();
    let mut pending = Vec::with_capacity(1000);
    for n in 0..count {
        let event = event(n % 1000);
        let bytes = registry.encode(&topic, &event).await.unwrap();
        let record = FutureRecord::to(&topic).key(&event.user_id).payload(&bytes);
        pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        if pending.len() == 1000 {
            for delivery in pending.drain(..) {
                delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
            }
        }
    }
    for delivery in pending.drain(..) {
        delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let produce_time = produced.elapsed();

    let started = Instant::now();
    let (stop, task) = effects::start_consumer(mongo, &topic, &test_support::unique("bench"));
    // One effect document per message applied (its inbox record is in the same transaction).
    let effects = mongo.db().collection::<Document>("effects");
    loop {
        if effects.count_documents(doc! {}).await.unwrap() as usize >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    stop.cancel();
    task.await.unwrap();
    println!(
        "consumer: {count} messages (produced in {produce_time:.1?}) consumed with inbox and effect in {took:.1?}: \
         {:.0} messages/s; MongoDB on {placement}",
        count as f64 / took.as_secs_f64()
    );
}

fn event(user: usize) -> UserActivityEvent {
    UserActivityEvent {
        envelope: Envelope::new("bench"),
        user_id: format!("user-{user}"),
        activity_type: ActivityType::Login,
        quest_id: None,
        item_code: None,
        item_count: None,
        new_level: None,
    }
}
