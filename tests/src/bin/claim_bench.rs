//! A first probe of the claim path: claims per second and their latency, then how long the
//! saga takes from acceptance to SUCCEEDED.
//!
//! `claim_bench [users] [concurrency] [seconds]`, pointed at a running instance with
//! `eval "$(./dev env)"` (ideally `./dev up --release`). Each claim is by a distinct player
//! with its own key, sent straight to the event service with an identity assertion (the
//! gateway's cost is measured by `bench/gateway_overhead.sh`). Players reach the event's
//! condition through activity on Kafka first, like real ones.

use e2e_tests::Api;
use e2e_tests::saga::{Direct, Game, level_event};
use futures::future::join_all;
use mongo_kit::Mongo;
use mongo_kit::mongodb::bson::{Document, doc};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let users: usize = args.next().map_or(10_000, |n| n.parse().unwrap());
    let concurrency: usize = args.next().map_or(64, |n| n.parse().unwrap());
    let seconds: u64 = args.next().map_or(10, |n| n.parse().unwrap());

    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let (event, reward) =
        level_event(&api, &operator, json!({ "type": "POINT", "amount": 1 })).await;
    let players: Arc<Vec<String>> =
        Arc::new((0..users).map(|_| test_support::unique("bench")).collect());

    let started = Instant::now();
    let game = Game::connect();
    for chunk in players.chunks(2_000) {
        join_all(chunk.iter().map(|p| {
            game.send(p, contracts::ActivityType::LevelUp, now_ms(), |e| {
                e.new_level = Some(1)
            })
        }))
        .await;
    }
    let mongo = Mongo::connect(&test_support::mongo("event_db"), "claim-bench")
        .await
        .unwrap();
    let db = mongo.client().database("event_db");
    let progress = db.collection::<Document>("progress");
    loop {
        let done = progress
            .count_documents(doc! { "eventId": &event })
            .await
            .unwrap();
        if done as usize >= users {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{users} players reached the condition through Kafka in {:.1?}",
        started.elapsed()
    );

    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let run = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (players, next, event, reward) =
            (players.clone(), next.clone(), event.clone(), reward.clone());
        tokio::spawn(async move {
            let direct = Direct::to_event_service();
            let mut samples = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= players.len() || Instant::now() >= deadline {
                    return samples;
                }
                let sent = Instant::now();
                let reply = direct.claim(&players[n], &event, &reward, "bench").await;
                samples.push((sent.elapsed(), reply.status));
            }
        })
    });
    let mut samples: Vec<(Duration, u16)> = join_all(workers)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    let took = run.elapsed();
    let accepted = samples.iter().filter(|(_, s)| *s == 202).count();
    let errors = samples.len() - accepted;
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].0;
    println!(
        "claims: {} sent at c{concurrency} in {took:.1?}: {:.0} accepted/s, {errors} errors; \
         latency p50 {:.1?} p95 {:.1?} p99 {:.1?} max {:.1?}",
        samples.len(),
        accepted as f64 / took.as_secs_f64(),
        pct(0.5),
        pct(0.95),
        pct(0.99),
        pct(1.0),
    );

    // Until every accepted claim is settled, then acceptance -> settled from the timelines.
    let claims = db.collection::<Document>("claims");
    let settle_started = Instant::now();
    loop {
        let pending = claims
            .count_documents(doc! { "eventId": &event, "status": "PENDING" })
            .await
            .unwrap();
        if pending == 0 {
            break;
        }
        assert!(
            settle_started.elapsed() < Duration::from_secs(120),
            "{pending} claims still pending"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    use futures::TryStreamExt;
    let mut sagas: Vec<i64> = claims
        .find(doc! { "eventId": &event })
        .await
        .unwrap()
        .try_collect::<Vec<Document>>()
        .await
        .unwrap()
        .iter()
        .filter_map(|c| {
            let steps = c.get_array("timeline").ok()?;
            let at = |name: &str| {
                steps.iter().find_map(|s| {
                    let s = s.as_document()?;
                    (s.get_str("step").ok()? == name).then(|| s.get_datetime("at").ok())?
                })
            };
            Some(at("COMPLETED")?.timestamp_millis() - at("REQUESTED")?.timestamp_millis())
        })
        .collect();
    sagas.sort_unstable();
    let spct = |p: f64| sagas[((sagas.len() - 1) as f64 * p) as usize];
    println!(
        "saga: {} claims SUCCEEDED, all settled {:.1?} after the load stopped; accepted -> \
         SUCCEEDED p50 {} ms p99 {} ms max {} ms",
        sagas.len(),
        settle_started.elapsed(),
        spct(0.5),
        spct(0.99),
        spct(1.0),
    );
}

fn now_ms() -> i64 {
    mongo_kit::mongodb::bson::DateTime::now().timestamp_millis()
}
