//! `GET /overview`: the platform at a glance for staff, from what the services already
//! expose. The gateway asks every instance of every service for `/metrics` and `/readyz`
//! and sums up claim figures, backlogs and readiness.
//!
//! Looks are shared: a caller within a second of the last look gets that one, so any number
//! of open consoles costs the services one scrape a second. The claims-per-minute chart is
//! drawn from the looks of the last 15 minutes, which this gateway keeps in memory: it
//! fills while someone watches, and starts over when the gateway restarts.

use crate::upstream::Upstream;
use axum::body::Bytes;
use http_api::overview::{
    ClaimFigures, GroupLag, InstanceReadiness, Overview, RatePoint, ServiceCount,
};
use prometheus_parse::{Sample, Scrape, Value};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Mutex;

/// How long one look is shared.
const FRESH: Duration = Duration::from_secs(1);
/// How far back the chart goes.
const HISTORY: Duration = Duration::from_secs(15 * 60);
/// The span each rate point is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Looks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: Option<(Instant, Overview)>,
    history: VecDeque<Settled>,
}

/// The claims settled so far, as of one look.
#[derive(Clone, Copy)]
struct Settled {
    taken: Instant,
    at: OffsetDateTime,
    succeeded: u64,
    failed: u64,
}

impl Looks {
    /// The last look if it is fresh, else a new one; callers meanwhile wait for it.
    pub async fn look(&self, upstreams: [&Upstream; 3]) -> Overview {
        let mut state = self.state.lock().await;
        if let Some((taken, overview)) = &state.last
            && taken.elapsed() < FRESH
        {
            return overview.clone();
        }
        let now = OffsetDateTime::now_utc();
        let (metrics, instances) = scrape(upstreams).await;
        let claims = ClaimFigures {
            succeeded: metrics.sum("claims_settled_total", Some(("status", "SUCCEEDED"))),
            failed: metrics.sum("claims_settled_total", Some(("status", "FAILED"))),
            pending: metrics
                .max_by("claims_pending", None)
                .values()
                .copied()
                .max()
                .unwrap_or(0),
        };
        let claims_per_minute = state.chart(Settled {
            taken: Instant::now(),
            at: now,
            succeeded: claims.succeeded,
            failed: claims.failed,
        });
        let overview = Overview {
            at: rfc3339(now),
            claims,
            claims_per_minute,
            consumer_lag: metrics.lag_by_group(),
            outbox_pending: per_service(metrics.max_by("outbox_pending", Some("service"))),
            dead_letters_pending: per_service(
                metrics.max_by("dead_letters_pending", Some("service")),
            ),
            instances,
        };
        state.last = Some((Instant::now(), overview.clone()));
        overview
    }
}

impl State {
    /// Adds `latest` to the history and answers the chart: for each look, the rate over
    /// the minute before it (or since the first look, when the history is shorter).
    fn chart(&mut self, latest: Settled) -> Vec<RatePoint> {
        self.history.push_back(latest);
        while self
            .history
            .front()
            .is_some_and(|s| latest.taken.duration_since(s.taken) > HISTORY)
        {
            self.history.pop_front();
        }
        let looks: Vec<Settled> = self.history.iter().copied().collect();
        looks
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, point)| {
                let base = looks[..i]
                    .iter()
                    .find(|s| point.taken.duration_since(s.taken) <= RATE_WINDOW)
                    .unwrap_or(&looks[i - 1]);
                rate(base, point)
            })
            .collect()
    }
}

/// Per minute from `from` to `to`. A counter that went down (an instance restarted) counts
/// as no change.
fn rate(from: &Settled, to: &Settled) -> RatePoint {
    let minutes = to.taken.duration_since(from.taken).as_secs_f64() / 60.0;
    let per_minute = |a: u64, b: u64| {
        if minutes > 0.0 {
            b.saturating_sub(a) as f64 / minutes
        } else {
            0.0
        }
    };
    RatePoint {
        at: rfc3339(to.at),
        succeeded: per_minute(from.succeeded, to.succeeded),
        failed: per_minute(from.failed, to.failed),
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// Every instance's metrics, and every instance's readiness.
async fn scrape(upstreams: [&Upstream; 3]) -> (Metrics, Vec<InstanceReadiness>) {
    let asked = upstreams.map(|upstream| async move {
        let (metrics, ready) =
            tokio::join!(upstream.ask_each("/metrics"), upstream.ask_each("/readyz"));
        (upstream.name(), metrics, ready)
    });
    let mut samples = Vec::new();
    let mut instances = Vec::new();
    for (service, metrics, ready) in futures::future::join_all(asked).await {
        samples.extend(
            metrics
                .into_iter()
                .filter_map(|(_, body)| body.ok())
                .flat_map(parse),
        );
        instances.extend(
            ready
                .into_iter()
                .map(|(instance, outcome)| InstanceReadiness {
                    service: service.to_owned(),
                    instance,
                    ready: outcome.is_ok(),
                    detail: outcome.err(),
                }),
        );
    }
    (Metrics(samples), instances)
}

fn parse(body: Bytes) -> Vec<Sample> {
    let text = String::from_utf8_lossy(&body);
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    Scrape::parse(lines).map(|s| s.samples).unwrap_or_default()
}

/// The samples of every instance's `/metrics`.
struct Metrics(Vec<Sample>);

impl Metrics {
    fn values<'a>(
        &'a self,
        name: &'a str,
        label: Option<(&'a str, &'a str)>,
    ) -> impl Iterator<Item = (&'a Sample, u64)> + 'a {
        self.0
            .iter()
            .filter(move |s| s.metric == name)
            .filter(move |s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .filter_map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) if v >= 0.0 => {
                    Some((s, v as u64))
                }
                _ => None,
            })
    }

    /// A counter summed over every instance (and label set) that matches `label`.
    fn sum(&self, name: &str, label: Option<(&str, &str)>) -> u64 {
        self.values(name, label).map(|(_, v)| v).sum()
    }

    /// A gauge every instance samples alike, by the value of label `key` (one entry when
    /// `None`): the greatest of the instances' values.
    fn max_by(&self, name: &str, key: Option<&str>) -> BTreeMap<String, u64> {
        let mut by = BTreeMap::new();
        for (sample, value) in self.values(name, None) {
            let group = key.and_then(|k| sample.labels.get(k)).unwrap_or_default();
            let entry = by.entry(group.to_owned()).or_insert(0);
            *entry = (*entry).max(value);
        }
        by
    }

    /// `consumer_lag` summed per group: each instance reports the partitions it holds.
    fn lag_by_group(&self) -> Vec<GroupLag> {
        let mut by: BTreeMap<String, u64> = BTreeMap::new();
        for (sample, lag) in self.values("consumer_lag", None) {
            let group = sample.labels.get("group").unwrap_or_default();
            *by.entry(group.to_owned()).or_default() += lag;
        }
        by.into_iter()
            .map(|(group, lag)| GroupLag { group, lag })
            .collect()
    }
}

fn per_service(by: BTreeMap<String, u64>) -> Vec<ServiceCount> {
    by.into_iter()
        .map(|(service, count)| ServiceCount { service, count })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE claims_settled_total counter
claims_settled_total{status=\"SUCCEEDED\"} 7
claims_settled_total{status=\"FAILED\"} 2
# TYPE consumer_lag gauge
consumer_lag{group=\"event.progress\",topic=\"game.user-activity\",partition=\"0\"} 3
consumer_lag{group=\"event.progress\",topic=\"game.user-activity\",partition=\"1\"} 4
# TYPE outbox_pending gauge
outbox_pending{service=\"event\"} 5
";

    fn two_instances() -> Metrics {
        let mut samples = parse(Bytes::from_static(TEXT.as_bytes()));
        samples.extend(parse(Bytes::from_static(TEXT.as_bytes())));
        Metrics(samples)
    }

    #[test]
    fn counters_and_lag_add_up_over_instances_and_shared_gauges_do_not() {
        let metrics = two_instances();
        assert_eq!(
            metrics.sum("claims_settled_total", Some(("status", "SUCCEEDED"))),
            14
        );
        assert_eq!(
            metrics.sum("claims_settled_total", Some(("status", "FAILED"))),
            4
        );
        assert_eq!(
            metrics.lag_by_group(),
            [GroupLag {
                group: "event.progress".into(),
                lag: 14
            }]
        );
        assert_eq!(
            per_service(metrics.max_by("outbox_pending", Some("service"))),
            [ServiceCount {
                service: "event".into(),
                count: 5
            }]
        );
    }

    #[test]
    fn the_chart_rates_each_look_over_the_minute_before_it() {
        let start = Instant::now();
        let at = OffsetDateTime::now_utc();
        let look = |secs: u64, succeeded: u64| Settled {
            taken: start + Duration::from_secs(secs),
            at,
            succeeded,
            failed: 0,
        };
        let mut state = State::default();
        assert!(state.chart(look(0, 100)).is_empty());
        assert_eq!(state.chart(look(30, 130))[0].succeeded, 60.0);
        let chart = state.chart(look(90, 160));
        // Over 30..90 s: 30 claims in a minute; the first look is out of the window.
        assert_eq!(chart[1].succeeded, 30.0);
        // A restarted instance's counter went back: no negative rate.
        assert_eq!(state.chart(look(100, 10))[2].succeeded, 0.0);
    }
}
