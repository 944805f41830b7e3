//! Per-request measurement: one latency histogram per scenario, outcomes by status, and a
//! per-second series (rate, p50, p99) that feeds both the progress line and the plots.
//! Workers record into a shared recorder; a ticker task closes each second.

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latencies are kept in microseconds, up to a minute, to 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One closed second of a run.
#[derive(Debug, Clone)]
pub struct Second {
    pub at_secs: f64,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

struct State {
    all: Histogram<u64>,
    second: Histogram<u64>,
    second_count: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    series: Vec<Second>,
}

/// Shared by a scenario's workers; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    name: String,
    started: Instant,
    state: Arc<Mutex<State>>,
}

impl Recorder {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            started: Instant::now(),
            state: Arc::new(Mutex::new(State {
                all: histogram(),
                second: histogram(),
                second_count: 0,
                ok: 0,
                errors: BTreeMap::new(),
                series: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A worker that panicked mid-record leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request: its latency and outcome (`Ok` for the expected status, `Err(label)`
    /// otherwise, e.g. "409" or "io").
    pub fn record(&self, latency: Duration, outcome: Result<(), String>) {
        let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
        let mut state = self.lock();
        state.all.saturating_record(micros);
        state.second.saturating_record(micros);
        state.second_count += 1;
        match outcome {
            Ok(()) => state.ok += 1,
            Err(label) => *state.errors.entry(label).or_default() += 1,
        }
    }

    /// A latency measured elsewhere (saga timelines), with no per-second series.
    pub fn record_only(&self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
        let mut state = self.lock();
        state.all.saturating_record(micros);
        state.ok += 1;
    }

    /// Closes the current second and prints the progress line.
    pub fn tick(&self, extra: &str) {
        let mut state = self.lock();
        let second = Second {
            at_secs: self.started.elapsed().as_secs_f64(),
            count: state.second_count,
            p50_ms: ms(state.second.value_at_quantile(0.5)),
            p99_ms: ms(state.second.value_at_quantile(0.99)),
        };
        state.second.reset();
        state.second_count = 0;
        let errors: u64 = state.errors.values().sum();
        eprintln!(
            "[{}] {:>5.1}s {:>6}/s p50 {:>7.1} ms p99 {:>7.1} ms  total {} errors {}{}",
            self.name,
            second.at_secs,
            second.count,
            second.p50_ms,
            second.p99_ms,
            state.all.len(),
            errors,
            extra,
        );
        state.series.push(second);
    }

    /// Ticks once a second until `stop` is cancelled.
    pub fn ticker(&self, stop: tokio_util::sync::CancellationToken) -> tokio::task::JoinHandle<()> {
        let recorder = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.tick().await;
            loop {
                tokio::select! {
                    _ = every.tick() => recorder.tick(""),
                    () = stop.cancelled() => return,
                }
            }
        })
    }

    pub fn series(&self) -> Vec<Second> {
        self.lock().series.clone()
    }

    /// The figures of a run that took `took`: rate is successful requests per second.
    pub fn summary(&self, took: Duration) -> Value {
        let state = self.lock();
        let q = |q: f64| ms(state.all.value_at_quantile(q));
        json!({
            "count": state.all.len(),
            "ok": state.ok,
            "errors": state.errors,
            "seconds": took.as_secs_f64(),
            "rate": state.ok as f64 / took.as_secs_f64().max(1e-9),
            "latency_ms": if state.all.is_empty() { Value::Null } else { json!({
                "p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": ms(state.all.max()),
                "mean": state.all.mean() / 1000.0,
            })},
        })
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Recorder {
    /// (percentile, ms) points for a percentile plot.
    pub fn percentiles(&self) -> Vec<(f64, f64)> {
        let state = self.lock();
        if state.all.is_empty() {
            return Vec::new();
        }
        [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0]
            .iter()
            .map(|p| (*p, ms(state.all.value_at_percentile(*p))))
            .collect()
    }
}
