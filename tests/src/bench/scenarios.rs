//! The five scenarios of the performance issue. Each returns its figures as JSON (the table
//! and the plots are made from that), and prints a progress line once a second meanwhile.

use super::measure::Recorder;
use super::prepare::{Setup, players};
use super::{Options, ScenarioResult};
use crate::saga::Direct;
use crate::{Api, User};
use auth_claims::IDENTITY_HEADER;
use futures::TryStreamExt;
use mongo_kit::mongodb::bson::{Document, doc};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Claims per second a release build sustains today (869af95: ~940/s at c64): sizes the
/// player pool so a run does not run out of players, without registering far too many.
const EXPECTED_CLAIMS_PER_SEC: usize = 1_000;
/// The most players a claims run registers (a first run then takes a minute or two).
const POOL_CAP: usize = 20_000;

fn outcome(
    result: &Result<reqwest::Response, reqwest::Error>,
    expected: u16,
) -> Result<(), String> {
    match result {
        Ok(r) if r.status().as_u16() == expected => Ok(()),
        Ok(r) => Err(r.status().as_u16().to_string()),
        Err(e) if e.is_timeout() => Err("timeout".into()),
        Err(_) => Err("io".into()),
    }
}

/// Sends `request` and reads the whole body, so latency includes the reply.
async fn timed(request: reqwest::RequestBuilder, expected: u16) -> (Duration, Result<(), String>) {
    let sent = Instant::now();
    let result = request.timeout(Duration::from_secs(30)).send().await;
    let outcome = outcome(&result, expected);
    if let Ok(response) = result {
        let _ = response.bytes().await;
    }
    (sent.elapsed(), outcome)
}

/// Sends `count` requests at a steady `rate` per second (open loop: a slow reply does not
/// slow the sending), `request(k)` making the k-th, and records each; `done(k)` runs when
/// the k-th got its reply. Returns how long it took.
async fn open_loop<R, D>(
    count: usize,
    rate: u64,
    expected: u16,
    recorder: &Recorder,
    request: R,
    done: D,
) -> anyhow::Result<Duration>
where
    R: Fn(usize) -> reqwest::RequestBuilder,
    D: Fn(usize) + Send + Sync + 'static,
{
    let started = Instant::now();
    // Bounds what a slow server makes pile up; past it the load is no longer steady, which
    // shows as a rate below the target.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(4096));
    let done = Arc::new(done);
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..count {
        let due = Duration::from_secs_f64(k as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let permit = in_flight.clone().acquire_owned().await?;
        let (request, recorder, done) = (request(k), recorder.clone(), done.clone());
        tasks.spawn(async move {
            let (latency, outcome) = timed(request, expected).await;
            done(k);
            recorder.record(latency, outcome);
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(started.elapsed())
}

/// A scenario's load under measurement: the instance's processes sampled, latencies
/// recorded, and a progress line each second until the load is done.
struct Measuring {
    sampler: super::procs::Sampler,
    recorder: Recorder,
    stop: CancellationToken,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Measuring {
    fn start(setup: &Setup, name: &str) -> Self {
        let recorder = Recorder::new(name);
        let stop = CancellationToken::new();
        Self {
            sampler: setup.sample(),
            ticker: Some(recorder.ticker(stop.clone())),
            recorder,
            stop,
        }
    }

    /// No more progress lines; the processes are still sampled.
    async fn load_done(&mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        if let Some(ticker) = self.ticker.take() {
            ticker.await?;
        }
        Ok(())
    }

    /// The scenario's row: the recorded latencies and the processes sampled until now.
    async fn result(
        mut self,
        name: &str,
        took: Duration,
        notes: Vec<String>,
    ) -> anyhow::Result<ScenarioResult> {
        self.load_done().await?;
        let mut result = ScenarioResult::new(name, &self.recorder, took, notes);
        result.figures["processes"] = self.sampler.finish();
        Ok(result)
    }
}

/// A GET of `path` by `player`: through the gateway with the player's token, or straight at
/// the service with an identity assertion.
fn get_as(
    player: &User,
    path: &str,
    via_gateway: bool,
    gateway: &Api,
    direct: &Direct,
) -> reqwest::RequestBuilder {
    if via_gateway {
        gateway
            .request(Method::GET, path)
            .bearer_auth(&player.access)
    } else {
        direct
            .api
            .request(Method::GET, path)
            .header(IDENTITY_HEADER, direct.assertion(&player.id))
    }
}

/// (1) Claims through the gateway by signed-in players, `concurrency` clients in a closed
/// loop; each claim by a distinct player with its own idempotency key.
pub async fn claims(setup: &Setup, options: &Options) -> anyhow::Result<ScenarioResult> {
    let expected = if options.smoke {
        20
    } else {
        EXPECTED_CLAIMS_PER_SEC
    };
    let pool = options.players.unwrap_or(
        (options.duration as usize * expected)
            .max(options.concurrency)
            .min(POOL_CAP),
    );
    let players = Arc::new(players(setup, pool).await?);
    let ids: Vec<String> = players.iter().map(|p| p.id.clone()).collect();
    setup.level_up(&ids, Duration::from_secs(120)).await?;

    let measuring = Measuring::start(setup, "claims");
    let recorder = &measuring.recorder;
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(options.duration);
    let started = Instant::now();
    let path = format!("/events/{}/rewards/{}/claims", setup.event, setup.reward);
    let workers: Vec<_> = (0..options.concurrency)
        .map(|_| {
            let (players, next, recorder, api, path) = (
                players.clone(),
                next.clone(),
                recorder.clone(),
                setup.gateway.clone(),
                path.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= players.len() || Instant::now() >= deadline {
                        return;
                    }
                    let request = api
                        .request(Method::POST, &path)
                        .bearer_auth(&players[n].access)
                        .header("idempotency-key", test_support::unique("bench"));
                    let (latency, outcome) = timed(request, 202).await;
                    recorder.record(latency, outcome);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let took = started.elapsed();
    let mut notes = vec![format!("{pool} players, c{}", options.concurrency)];
    if next.load(Ordering::Relaxed) >= players.len() && took < Duration::from_secs(options.duration)
    {
        notes.push(format!("player pool ran out after {took:.1?}"));
    }
    measuring.result("claims", took, notes).await
}

/// (2) Claims at a steady `rate` (open loop), straight to the event service with identity
/// assertions for made-up players (so the rate is not bounded by how many accounts exist;
/// the gateway's share is scenario 4). Then accepted -> SUCCEEDED from each claim's
/// timeline, read from `event_db.claims` in one query rather than one GET per claim.
pub async fn saga(setup: &Setup, options: &Options) -> anyhow::Result<Vec<ScenarioResult>> {
    let total = (options.rate * options.duration) as usize;
    let ids: Arc<Vec<String>> = Arc::new(
        (0..total)
            .map(|_| test_support::unique("bench-saga"))
            .collect(),
    );
    setup.level_up(&ids, Duration::from_secs(120)).await?;

    let direct = Arc::new(Direct::to_event_service());
    let mut measuring = Measuring::start(setup, "saga");
    // When each claim's 202 came back (ms since the epoch, as MongoDB's timestamps): the
    // moment it was accepted.
    let accepted_at = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        i64,
    >::new()));
    let path = format!("/events/{}/rewards/{}/claims", setup.event, setup.reward);
    let took = open_loop(
        ids.len(),
        options.rate,
        202,
        &measuring.recorder,
        |k| {
            direct
                .api
                .request(Method::POST, &path)
                .header(IDENTITY_HEADER, direct.assertion(&ids[k]))
                .header("idempotency-key", test_support::unique("bench"))
        },
        {
            let (ids, accepted_at) = (ids.clone(), accepted_at.clone());
            move |k| {
                let now = mongo_kit::mongodb::bson::DateTime::now().timestamp_millis();
                let mut accepted = accepted_at.lock().expect("never poisoned");
                accepted.insert(ids[k].clone(), now);
            }
        },
    )
    .await?;
    measuring.load_done().await?;

    // Every accepted claim terminal: how long after the load stopped. Only this scenario's
    // players: the claims scenario used the same event.
    let claims = setup.event_db.collection::<Document>("claims");
    let ours = doc! { "eventId": &setup.event, "userId": { "$in": ids.as_slice() } };
    let settling = Instant::now();
    let settled_after = loop {
        let pending = claims
            .count_documents({
                let mut pending = ours.clone();
                pending.insert("status", "PENDING");
                pending
            })
            .await?;
        if pending == 0 {
            break Some(settling.elapsed());
        }
        if settling.elapsed() > Duration::from_secs(120) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let saga = Recorder::new("saga-settle");
    let requested = Recorder::new("saga-requested");
    let accepted_at = std::mem::take(&mut *accepted_at.lock().expect("never poisoned"));
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    let mut cursor = claims.find(ours).await?;
    while let Some(claim) = cursor.try_next().await? {
        *statuses
            .entry(claim.get_str("status").unwrap_or("?").to_owned())
            .or_default() += 1;
        let Ok(steps) = claim.get_array("timeline") else {
            continue;
        };
        let at = |name: &str| {
            steps.iter().find_map(|s| {
                let s = s.as_document()?;
                (s.get_str("step").ok()? == name).then(|| s.get_datetime("at").ok())?
            })
        };
        let Some(done) = at("COMPLETED") else {
            continue;
        };
        let since =
            |from: i64| Duration::from_millis((done.timestamp_millis() - from).max(0) as u64);
        if let Some(from) = at("REQUESTED") {
            requested.record_only(since(from.timestamp_millis()));
        }
        if let Some(from) = claim
            .get_str("userId")
            .ok()
            .and_then(|u| accepted_at.get(u))
        {
            saga.record_only(since(*from));
        }
    }
    let settle_note = match settled_after {
        Some(after) => format!(
            "all terminal {:.1} s after load stopped ({} 5 s)",
            after.as_secs_f64(),
            if after <= Duration::from_secs(5) {
                "within"
            } else {
                "NOT within"
            }
        ),
        None => "claims still PENDING 120 s after load stopped".to_owned(),
    };
    let mut settled = ScenarioResult::new(
        "saga:accepted->SUCCEEDED",
        &saga,
        took,
        vec![settle_note, format!("statuses {statuses:?}")],
    );
    settled.figures["statuses"] = json!(statuses);
    settled.figures["settled_after_secs"] = json!(settled_after.map(|d| d.as_secs_f64()));
    settled.figures["rate"] = Value::Null;
    let mut end_to_end = ScenarioResult::new(
        "saga:requested->SUCCEEDED",
        &requested,
        took,
        vec!["from the request's arrival: the claim's own latency included".to_owned()],
    );
    end_to_end.figures["rate"] = Value::Null;
    // Processes sampled over load and settling together: the saga's work continues after
    // the last claim.
    let notes = vec![format!(
        "target {}/s, direct to event service",
        options.rate
    )];
    let accepted = measuring.result("saga", took, notes).await?;
    Ok(vec![accepted, settled, end_to_end])
}

/// The event service's `/metrics`: (sum of consumer_lag, consumer_processed_total) of the
/// progress consumer group.
async fn progress_consumer(client: &reqwest::Client, url: &str) -> Option<(f64, f64)> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    let mut lag = 0.0;
    let mut processed = 0.0;
    for line in text.lines() {
        if !line.contains("group=\"event.progress\"") {
            continue;
        }
        let value: f64 = line.rsplit(' ').next()?.parse().ok()?;
        if line.starts_with("consumer_lag{") {
            lag += value;
        } else if line.starts_with("consumer_processed_total{") {
            processed += value;
        }
    }
    Some((lag, processed))
}

/// (3) Activity ingestion: `game-sim load` produces at `ingest_rate` while the progress
/// consumer's lag and processed count are sampled from the event service's metrics; the
/// rate is what the consumer processed per second until it caught up.
pub async fn ingest(setup: &Setup, options: &Options) -> anyhow::Result<ScenarioResult> {
    let game_sim = std::env::current_exe()?
        .parent()
        .map(|d| d.join("game-sim"))
        .ok_or_else(|| anyhow::anyhow!("no directory of the bench binary"))?;
    let users = if options.smoke { 50 } else { 5_000 };
    let client = reqwest::Client::builder().no_proxy().build()?;
    let metrics = format!("{}/metrics", test_support::service_url("event"));
    let progress = setup.event_db.collection::<Document>("progress");
    let (_, processed_before) = progress_consumer(&client, &metrics)
        .await
        .ok_or_else(|| anyhow::anyhow!("no consumer metrics at {metrics}"))?;
    let progress_before = progress.estimated_document_count().await?;
    // The run's event counts levels, which fold idempotently and need no inbox record; an
    // event counting quests and items makes the other half of the mix take the costlier
    // path (an inbox record each, so that a re-send cannot count twice).
    let counting = crate::saga::active_event(
        &setup.gateway,
        &setup.operator,
        json!({ "all": [
            { "metric": "QUEST_COMPLETED", "op": ">=", "value": 1_000_000 },
            { "metric": "ITEM_ACQUIRED", "op": ">=", "value": 1_000_000 },
        ]}),
    )
    .await;

    let sampler = setup.sample();
    let mut child = tokio::process::Command::new(&game_sim)
        .args(["load", "--json", "--quiet", "--seed", "1"])
        .args(["--users", &users.to_string()])
        .args(["--rate", &options.ingest_rate.to_string()])
        .args(["--duration", &options.duration.to_string()])
        .args([
            "--user-prefix",
            &format!("{}-", test_support::unique("bench-sim")),
        ])
        .args([
            "--brokers",
            &test_support::required(test_support::KAFKA_BROKERS),
        ])
        .args([
            "--registry",
            &test_support::required(test_support::REGISTRY_URL),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {}: {e}", game_sim.display()))?;
    let stdout = child.stdout.take();
    let summary = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut out = String::new();
        if let Some(mut stdout) = stdout {
            let _ = stdout.read_to_string(&mut out).await;
        }
        out
    });

    let recorder = Recorder::new("ingest");
    let started = Instant::now();
    let mut lag_series = Vec::new();
    let mut last_processed = processed_before;
    let mut caught_up_at = None;
    // Known once game-sim has exited: what the broker acknowledged, i.e. what the consumer
    // has to process to have caught up.
    let mut produced: Option<(Value, std::process::ExitStatus)> = None;
    let mut summary = Some(summary);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if produced.is_none()
            && let Some(status) = child.try_wait()?
            && let Some(task) = summary.take()
        {
            let json = task
                .await?
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str(l).ok())
                .unwrap_or(Value::Null);
            produced = Some((json, status));
        }
        let (lag, processed) = progress_consumer(&client, &metrics)
            .await
            .unwrap_or_default();
        let docs = progress.estimated_document_count().await.unwrap_or(0);
        let per_sec = processed - last_processed;
        last_processed = processed;
        let t = started.elapsed().as_secs_f64();
        lag_series.push(json!({ "at_secs": t, "lag": lag, "processed_per_sec": per_sec, "progress_docs": docs, "producing": produced.is_none() }));
        eprintln!(
            "[ingest] {t:>5.1}s consumed {per_sec:>7.0}/s lag {lag:>7.0} progress docs {docs}{}",
            if produced.is_none() {
                ""
            } else {
                " (producer done)"
            }
        );
        if let Some((json, _)) = &produced {
            // The lag gauge refreshes with librdkafka's statistics, so the processed count
            // is the firmer sign of having caught up.
            let acknowledged = json["acknowledged"].as_f64().unwrap_or(0.0);
            if processed - processed_before >= acknowledged || (json.is_null() && lag == 0.0) {
                caught_up_at = Some(started.elapsed());
                break;
            }
            if started.elapsed() > Duration::from_secs(options.duration + 120) {
                break;
            }
        }
    }
    let (summary, status) = match produced {
        Some(done) => done,
        None => (Value::Null, child.wait().await?),
    };
    let consumed = last_processed - processed_before;
    let took = caught_up_at.unwrap_or(started.elapsed());
    // Judged while the load lasts: draining afterwards says nothing about keeping up.
    let lags: Vec<f64> = lag_series
        .iter()
        .filter(|s| s["producing"].as_bool() == Some(true))
        .filter_map(|s| s["lag"].as_f64())
        .collect();
    let half = lags.len() / 2;
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    let growing = lags.len() >= 4 && mean(&lags[half..]) > 2.0 * mean(&lags[..half]).max(100.0);
    let mut result = ScenarioResult::new(
        "ingest",
        &recorder,
        took,
        vec![
            format!(
                "game-sim {} users at {}/s: {}",
                users,
                options.ingest_rate,
                summary.get("averageRate").map_or("?".into(), |r| format!(
                    "{:.0}/s produced",
                    r.as_f64().unwrap_or(0.0)
                ))
            ),
            format!(
                "lag max {:.0}, {}",
                lags.iter().cloned().fold(0.0, f64::max),
                if growing { "GROWING" } else { "not growing" }
            ),
            match caught_up_at {
                Some(t) => format!("caught up {:.1} s after start", t.as_secs_f64()),
                None => "did NOT catch up".into(),
            },
        ],
    );
    result.figures["rate"] = json!(consumed / took.as_secs_f64().max(1e-3));
    result.figures["ok"] = json!(consumed);
    result.figures["count"] = json!(consumed);
    if !status.success() || summary["errors"].as_u64().unwrap_or(0) > 0 {
        result.figures["errors"] = json!({ "game-sim": summary["errors"].as_u64().unwrap_or(1) });
    }
    result.figures["game_sim"] = summary;
    result.figures["processes"] = sampler.finish();
    result.figures["lag"] = Value::Array(lag_series);
    result.figures["progress_docs_added"] =
        json!(progress.estimated_document_count().await? as i64 - progress_before as i64);
    // Ended, so that later runs do not fold their activity into it too.
    crate::saga::set_status(&setup.gateway, &setup.operator, &counting, "ENDED").await;
    Ok(result)
}

/// (4) Authenticated cheap GETs at `concurrency` through the gateway, then the same straight
/// at the owning service with identity assertions (the gap is the proxy): `/users/me`, which
/// reads the user from MongoDB each time, and `/events/{id}`, which the event service serves
/// from its short-lived copy, so what is left is HTTP, the gateway and the load generator.
pub async fn gateway(setup: &Setup, options: &Options) -> anyhow::Result<Vec<ScenarioResult>> {
    let players = Arc::new(players(setup, options.concurrency.min(64)).await?);
    let event_path = format!("/events/{}", setup.event);
    let targets = [
        ("/users/me", "/users/me", "auth"),
        ("/events/{id}", event_path.as_str(), "event"),
    ];
    let mut results = Vec::new();
    for ((label, path, service), via_gateway) in
        targets.iter().flat_map(|t| [(*t, true), (*t, false)])
    {
        let direct = Arc::new(Direct::at(test_support::service_url(service)));
        let path = path.to_owned();
        let name = if via_gateway {
            format!("gateway:{label} via gateway")
        } else {
            format!("gateway:{label} direct")
        };
        let measuring = Measuring::start(setup, &name);
        let deadline = Instant::now() + Duration::from_secs(options.duration);
        let started = Instant::now();
        let workers: Vec<_> = (0..options.concurrency)
            .map(|i| {
                let (players, direct, recorder, gateway, path) = (
                    players.clone(),
                    direct.clone(),
                    measuring.recorder.clone(),
                    setup.gateway.clone(),
                    path.clone(),
                );
                tokio::spawn(async move {
                    let player = &players[i % players.len()];
                    while Instant::now() < deadline {
                        let request = get_as(player, &path, via_gateway, &gateway, &direct);
                        let (latency, outcome) = timed(request, 200).await;
                        recorder.record(latency, outcome);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await?;
        }
        let took = started.elapsed();
        let notes = vec![format!("c{}", options.concurrency)];
        results.push(measuring.result(&name, took, notes).await?);
    }
    // The proxy's cost at equal load: one steady rate through the gateway and direct (in
    // the closed loops above, the direct run also gets the CPU the gateway would use).
    let direct = Direct::at(test_support::service_url("event"));
    for via_gateway in [true, false] {
        let name = format!(
            "gateway:/events/{{id}} {} @{}/s",
            if via_gateway { "via gateway" } else { "direct" },
            options.gateway_rate
        );
        let measuring = Measuring::start(setup, &name);
        let count = (options.gateway_rate * options.duration) as usize;
        let took = open_loop(
            count,
            options.gateway_rate,
            200,
            &measuring.recorder,
            |k| {
                let player = &players[k % players.len()];
                get_as(player, &event_path, via_gateway, &setup.gateway, &direct)
            },
            |_| {},
        )
        .await?;
        let notes = vec![format!("open loop at {}/s", options.gateway_rate)];
        results.push(measuring.result(&name, took, notes).await?);
    }
    Ok(results)
}
