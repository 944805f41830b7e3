//! What the harness did and saw, kept while the run lasts: every claim it made and how it
//! ended, every activity id that reached Kafka, the probes' timings, the bans, and each
//! HTTP answer the load met. The invariants and the report are computed from it.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

/// How one claim (one idempotency key) ended for the client, after its retries.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClaimEnd {
    /// 202 (or 200 for a repeated key): the platform holds a claim with this id.
    Accepted { claim_id: String },
    /// A 4xx problem: the claim was refused for a reason the client can read.
    Refused { code: String },
    /// Still no answer after the client's retries (5xx, or no connection).
    Failed { code: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct ClaimMade {
    pub user: String,
    pub reward: String,
    pub key: String,
    pub end: ClaimEnd,
}

/// A claim sent only to see whether the claim path works end to end.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Seconds since the run began.
    pub sent_at: f64,
    /// When it reached SUCCEEDED, if it did.
    pub succeeded_at: Option<f64>,
}

struct Answer {
    at: f64,
    status: u16,
    label: String,
}

#[derive(Default)]
struct State {
    claims: Vec<ClaimMade>,
    /// Per player: the activity message ids a broker acknowledged.
    activity: HashMap<String, HashSet<String>>,
    duplicates_sent: u64,
    poison_keys: Vec<String>,
    probes: Vec<Probe>,
    banned: HashSet<String>,
    /// Every answer the load met, when it came: its status (0: no answer) and its label
    /// (the status with the problem code, if there was one).
    timeline: Vec<Answer>,
    /// Answers that broke a promise of the API: a 500 or a 504 (or a 502 in a cluster), or a
    /// 503 without Retry-After or not as problem+json. The first few, and how many in all.
    bad_answers: Vec<String>,
    bad_count: u64,
}

pub struct Journal {
    started: Instant,
    /// When the run began, as the databases store time: what the run made is newer.
    pub started_at: mongo_kit::mongodb::bson::DateTime,
    /// A 502 breaks a promise too where every service runs twice: the gateway must send
    /// the request to the other instance.
    replicated: bool,
    state: Mutex<State>,
}

impl Journal {
    pub fn new(replicated: bool) -> Self {
        Self {
            started: Instant::now(),
            started_at: mongo_kit::mongodb::bson::DateTime::now(),
            replicated,
            state: Mutex::new(State::default()),
        }
    }

    /// Seconds since the run began.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("never poisoned"))
    }

    pub fn claim(&self, made: ClaimMade) {
        self.with(|s| s.claims.push(made));
    }

    pub fn delivered(&self, user: &str, message_id: &str) {
        self.with(|s| {
            s.activity
                .entry(user.to_owned())
                .or_default()
                .insert(message_id.to_owned());
        });
    }

    pub fn duplicate_sent(&self) {
        self.with(|s| s.duplicates_sent += 1);
    }

    pub fn poison(&self, key: String) {
        self.with(|s| s.poison_keys.push(key));
    }

    /// Returns the probe's index, for [`Self::probe_succeeded`].
    pub fn probe_sent(&self) -> usize {
        let at = self.now();
        self.with(|s| {
            s.probes.push(Probe {
                sent_at: at,
                succeeded_at: None,
            });
            s.probes.len() - 1
        })
    }

    pub fn probe_succeeded(&self, index: usize) {
        let at = self.now();
        self.with(|s| s.probes[index].succeeded_at = Some(at));
    }

    pub fn ban(&self, user: &str) {
        self.with(|s| s.banned.insert(user.to_owned()));
    }

    pub fn is_banned(&self, user: &str) -> bool {
        self.with(|s| s.banned.contains(user))
    }

    /// One HTTP answer of the load: `status` with its problem `code` (empty if none).
    pub fn answer(&self, status: u16, code: &str, retry_after: bool, problem_json: bool) {
        let label = if code.is_empty() {
            status.to_string()
        } else {
            format!("{status} {code}")
        };
        let broken = match status {
            500 => Some("a 500"),
            // The service did not answer within the gateway's timeout: it should have said
            // 503 (with Retry-After) before that.
            504 => Some("a 504"),
            502 if self.replicated => Some("a 502 with another instance up"),
            503 if !retry_after => Some("a 503 without Retry-After"),
            503 if !problem_json => Some("a 503 that is not application/problem+json"),
            _ => None,
        };
        let at = self.now();
        self.with(|s| {
            if let Some(what) = broken {
                s.bad_count += 1;
                if s.bad_answers.len() < 20 {
                    s.bad_answers.push(format!("{what} at {at:.1}s: {label}"));
                }
            }
            s.timeline.push(Answer { at, status, label });
        });
    }

    /// A request that got no HTTP answer at all.
    pub fn no_answer(&self) {
        let at = self.now();
        self.with(|s| {
            s.timeline.push(Answer {
                at,
                status: 0,
                label: "no answer".into(),
            });
        });
    }

    /// Claim answers that came between `from` and `to` (seconds into the run), by status
    /// (0: no answer).
    pub fn answers_between(&self, from: f64, to: f64) -> BTreeMap<u16, u64> {
        self.with(|s| {
            let mut counts = BTreeMap::new();
            for answer in s.timeline.iter().filter(|a| (from..=to).contains(&a.at)) {
                *counts.entry(answer.status).or_default() += 1;
            }
            counts
        })
    }

    pub fn claims(&self) -> Vec<ClaimMade> {
        self.with(|s| s.claims.clone())
    }

    pub fn activity(&self) -> HashMap<String, HashSet<String>> {
        self.with(|s| s.activity.clone())
    }

    pub fn duplicates_sent(&self) -> u64 {
        self.with(|s| s.duplicates_sent)
    }

    pub fn poison_keys(&self) -> Vec<String> {
        self.with(|s| s.poison_keys.clone())
    }

    pub fn probes(&self) -> Vec<Probe> {
        self.with(|s| s.probes.clone())
    }

    /// When the first probe sent at or after `since` succeeded, if one has.
    pub fn first_success_since(&self, since: f64) -> Option<f64> {
        self.with(|s| {
            s.probes
                .iter()
                .filter(|p| p.sent_at >= since)
                .filter_map(|p| p.succeeded_at)
                .min_by(f64::total_cmp)
        })
    }

    pub fn banned(&self) -> HashSet<String> {
        self.with(|s| s.banned.clone())
    }

    /// Every answer of the run, counted by label.
    pub fn answers(&self) -> BTreeMap<String, u64> {
        self.with(|s| {
            let mut counts = BTreeMap::new();
            for answer in &s.timeline {
                *counts.entry(answer.label.clone()).or_default() += 1;
            }
            counts
        })
    }

    /// How many answers broke a promise, and the first few of them.
    pub fn bad_answers(&self) -> (u64, Vec<String>) {
        self.with(|s| (s.bad_count, s.bad_answers.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_500_and_a_bare_503_are_broken_promises_and_a_proper_503_is_not() {
        let journal = Journal::new(false);
        journal.answer(503, "database_unavailable", true, true);
        journal.answer(202, "", false, false);
        assert_eq!(journal.bad_answers().0, 0);
        journal.answer(500, "internal_error", false, true);
        journal.answer(503, "database_unavailable", false, true);
        journal.answer(503, "x", true, false);
        assert_eq!(journal.bad_answers().0, 3);
        for _ in 0..30 {
            journal.answer(500, "internal_error", false, true);
        }
        let (count, shown) = journal.bad_answers();
        assert_eq!(
            (count, shown.len()),
            (33, 20),
            "all counted, the first 20 shown"
        );
        assert_eq!(journal.answers()["503 database_unavailable"], 2);
    }

    #[test]
    fn a_502_is_a_broken_promise_only_where_another_instance_runs() {
        let single = Journal::new(false);
        single.answer(502, "upstream_unavailable", false, true);
        assert_eq!(single.bad_answers().0, 0);
        let cluster = Journal::new(true);
        cluster.answer(502, "upstream_unavailable", false, true);
        assert_eq!(cluster.bad_answers().0, 1);
    }

    #[test]
    fn answers_are_counted_by_when_they_came() {
        let journal = Journal::new(false);
        journal.answer(202, "", false, false);
        journal.no_answer();
        let all = journal.answers_between(0.0, journal.now());
        assert_eq!(all.get(&202), Some(&1));
        assert_eq!(all.get(&0), Some(&1));
        assert!(
            journal
                .answers_between(journal.now() + 1.0, f64::MAX)
                .is_empty()
        );
    }

    #[test]
    fn an_activity_id_delivered_twice_counts_once() {
        let journal = Journal::new(false);
        journal.delivered("u", "m1");
        journal.delivered("u", "m1");
        journal.delivered("u", "m2");
        assert_eq!(journal.activity()["u"].len(), 2);
    }
}
