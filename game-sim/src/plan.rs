//! Planning the activity that meets an event's condition: a pure function of the condition,
//! the event's window, the current time and the user.
//!
//! It follows how the event service counts (activity counts only when its `occurredAt` is in
//! `[startsAt, endsAt)`, and activity from the future is refused):
//!
//! - `LOGIN_DAYS n` / `LOGIN_STREAK n`: one LOGIN on each of `n` consecutive UTC days ending
//!   with the last day of the window that has passed (today for a running event), which
//!   meets both metrics at once;
//! - `QUEST_COMPLETED n`: `n` completions of the filter's quest (or [`DEFAULT_QUEST`]);
//! - `ITEM_ACQUIRED n` / `ITEM_USED n`: one record of `n` of the filter's item (or
//!   [`DEFAULT_ITEM`]);
//! - `LEVEL n`: one LEVEL_UP to `n`.
//!
//! `all` meets every child with one combined plan (a requirement shared by several leaves is
//! produced once, at the largest value; filtered counts also count towards an unfiltered leaf
//! of the same metric); `any` meets its cheapest child (fewest records).

use crate::PRODUCER;
use contracts::{ActivityType, Envelope, UserActivityEvent};
use http_api::events::{Condition, Leaf, Metric};
use std::collections::BTreeMap;

pub const DEFAULT_QUEST: &str = "sim-quest";
pub const DEFAULT_ITEM: &str = "sim-item";
pub const DAY_MS: i64 = 86_400_000;

/// An event's time window in epoch milliseconds: `[starts_at, ends_at)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub starts_at: i64,
    pub ends_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the event has not started yet (it starts at {starts_at}); activity before then does not count"
    )]
    NotStarted { starts_at: String },
    #[error("the event's window is empty")]
    EmptyWindow,
    #[error(
        "{needed} consecutive login days are needed, but the window since its start ({starts_at}) \
         holds only {available} UTC day(s) up to now"
    )]
    WindowTooShort {
        needed: u32,
        available: i64,
        starts_at: String,
    },
    #[error("unsupported operator {0:?} (only \">=\")")]
    UnsupportedOp(String),
    #[error("an `any` with no conditions cannot be met")]
    EmptyAny,
}

/// Plans the records that make `user_id` meet `condition` in `window`, at `now_ms` (epoch ms).
/// Records are in time order; none is in the future or outside the window.
pub fn plan(
    condition: &Condition,
    window: Window,
    now_ms: i64,
    user_id: &str,
) -> Result<Vec<UserActivityEvent>, PlanError> {
    let needs = needs_of(condition, window, now_ms)?;
    realise(&needs, window, now_ms, user_id)
}

/// Kinds of countable activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Counted {
    Quest,
    Acquired,
    Used,
}

/// What a condition asks for, merged: the largest value per requirement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Needs {
    login_days: u32,
    /// (kind, filter) -> count; `None` is the unfiltered leaf.
    counts: BTreeMap<(Counted, Option<String>), u32>,
    level: u32,
}

impl Needs {
    fn merge(&mut self, other: Needs) {
        self.login_days = self.login_days.max(other.login_days);
        self.level = self.level.max(other.level);
        for (key, n) in other.counts {
            let entry = self.counts.entry(key).or_default();
            *entry = (*entry).max(n);
        }
    }

    fn of_leaf(leaf: &Leaf) -> Result<Self, PlanError> {
        if leaf.op != ">=" {
            return Err(PlanError::UnsupportedOp(leaf.op.clone()));
        }
        let filter = leaf.filter.clone().unwrap_or_default();
        let mut needs = Needs::default();
        let mut count = |kind, key: Option<String>| {
            needs.counts.insert((kind, key), leaf.value);
        };
        match leaf.metric {
            Metric::QuestCompleted => count(Counted::Quest, filter.quest_id),
            Metric::ItemAcquired => count(Counted::Acquired, filter.item_code),
            Metric::ItemUsed => count(Counted::Used, filter.item_code),
            Metric::LoginDays | Metric::LoginStreak => needs.login_days = leaf.value,
            Metric::Level => needs.level = leaf.value,
        }
        Ok(needs)
    }
}

fn needs_of(condition: &Condition, window: Window, now_ms: i64) -> Result<Needs, PlanError> {
    match condition {
        Condition::Leaf(leaf) => Needs::of_leaf(leaf),
        Condition::All { all } => {
            let mut needs = Needs::default();
            for child in all {
                needs.merge(needs_of(child, window, now_ms)?);
            }
            Ok(needs)
        }
        Condition::Any { any } => {
            let mut best: Option<(usize, Needs)> = None;
            let mut first_error = None;
            for child in any {
                // A child that cannot be met (say, a streak longer than the window) is skipped
                // in favour of one that can.
                let attempt = needs_of(child, window, now_ms)
                    .and_then(|needs| Ok((realise(&needs, window, now_ms, "")?.len(), needs)));
                match attempt {
                    Ok((cost, needs)) if best.as_ref().is_none_or(|(c, _)| cost < *c) => {
                        best = Some((cost, needs));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            match (best, first_error) {
                (Some((_, needs)), _) => Ok(needs),
                (None, Some(e)) => Err(e),
                (None, None) => Err(PlanError::EmptyAny),
            }
        }
    }
}

fn realise(
    needs: &Needs,
    window: Window,
    now_ms: i64,
    user_id: &str,
) -> Result<Vec<UserActivityEvent>, PlanError> {
    if window.ends_at <= window.starts_at {
        return Err(PlanError::EmptyWindow);
    }
    if now_ms < window.starts_at {
        return Err(PlanError::NotStarted {
            starts_at: rfc3339(window.starts_at),
        });
    }
    // The latest moment that counts: now, or the window's last millisecond if it has ended.
    let latest = now_ms.min(window.ends_at - 1);
    let record = |at: i64, kind: ActivityType| UserActivityEvent {
        envelope: Envelope {
            message_id: uuid::Uuid::now_v7(),
            occurred_at: at,
            producer: PRODUCER.to_owned(),
            correlation_id: None,
        },
        user_id: user_id.to_owned(),
        activity_type: kind,
        quest_id: None,
        item_code: None,
        item_count: None,
        new_level: None,
    };
    let mut planned = Vec::new();

    if needs.login_days > 0 {
        let last_day = latest.div_euclid(DAY_MS);
        let first_day = window.starts_at.div_euclid(DAY_MS);
        let available = last_day - first_day + 1;
        if available < i64::from(needs.login_days) {
            return Err(PlanError::WindowTooShort {
                needed: needs.login_days,
                available,
                starts_at: rfc3339(window.starts_at),
            });
        }
        for back in (0..i64::from(needs.login_days)).rev() {
            // The same time of day as `latest`, `back` days earlier; on the window's first day
            // no earlier than its start (which is still that day, as checked above).
            let at = (latest - back * DAY_MS).max(window.starts_at);
            planned.push(record(at, ActivityType::Login));
        }
    }

    for kind in [Counted::Quest, Counted::Acquired, Counted::Used] {
        let filtered: u64 = needs
            .counts
            .iter()
            .filter(|((k, key), _)| *k == kind && key.is_some())
            .map(|(_, n)| u64::from(*n))
            .sum();
        for ((k, key), &n) in &needs.counts {
            if *k != kind {
                continue;
            }
            // The filtered records also count towards the unfiltered leaf.
            let n = match key {
                Some(_) => u64::from(n),
                None => u64::from(n).saturating_sub(filtered),
            };
            match kind {
                Counted::Quest => {
                    let quest = key.as_deref().unwrap_or(DEFAULT_QUEST);
                    for _ in 0..n {
                        let mut event = record(latest, ActivityType::QuestCompleted);
                        event.quest_id = Some(quest.to_owned());
                        planned.push(event);
                    }
                }
                Counted::Acquired | Counted::Used => {
                    let activity = if kind == Counted::Acquired {
                        ActivityType::ItemAcquired
                    } else {
                        ActivityType::ItemUsed
                    };
                    let item = key.as_deref().unwrap_or(DEFAULT_ITEM);
                    let mut left = n;
                    while left > 0 {
                        let chunk = left.min(i32::MAX as u64);
                        let mut event = record(latest, activity);
                        event.item_code = Some(item.to_owned());
                        event.item_count = Some(chunk as i32);
                        planned.push(event);
                        left -= chunk;
                    }
                }
            }
        }
    }

    if needs.level > 0 {
        let mut event = record(latest, ActivityType::LevelUp);
        event.new_level = Some(needs.level.min(i32::MAX as u32) as i32);
        planned.push(event);
    }
    planned.sort_by_key(|e| e.envelope.occurred_at);
    Ok(planned)
}

/// Epoch milliseconds as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// RFC 3339 to epoch milliseconds.
pub fn parse_rfc3339(text: &str) -> Result<i64, time::error::Parse> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_api::events::LeafFilter;
    use std::collections::{BTreeSet, HashMap};

    const NOW: i64 = 1_767_225_600_000 + 15 * 3_600_000; // 2026-01-01T15:00:00Z
    const USER: &str = "user-1";

    fn leaf(metric: Metric, value: u32) -> Condition {
        Condition::Leaf(Leaf {
            metric,
            op: ">=".into(),
            value,
            filter: None,
        })
    }

    fn filtered(metric: Metric, value: u32, quest: Option<&str>, item: Option<&str>) -> Condition {
        Condition::Leaf(Leaf {
            metric,
            op: ">=".into(),
            value,
            filter: Some(LeafFilter {
                quest_id: quest.map(Into::into),
                item_code: item.map(Into::into),
            }),
        })
    }

    fn days_ago(days: i64) -> Window {
        Window {
            starts_at: NOW - days * DAY_MS,
            ends_at: NOW + 30 * DAY_MS,
        }
    }

    /// What the event service would compute from `events` for `leaf`, inside `window`.
    fn measure(events: &[UserActivityEvent], window: Window, leaf: &Leaf) -> i64 {
        let inside: Vec<_> = events
            .iter()
            .filter(|e| {
                let at = e.envelope.occurred_at;
                at >= window.starts_at && at < window.ends_at
            })
            .collect();
        let filter = leaf.filter.clone().unwrap_or_default();
        let items = |kind: ActivityType| {
            inside
                .iter()
                .filter(|e| e.activity_type == kind)
                .filter(|e| filter.item_code.is_none() || e.item_code == filter.item_code)
                .map(|e| i64::from(e.item_count.unwrap()))
                .sum()
        };
        let days: BTreeSet<i64> = inside
            .iter()
            .filter(|e| e.activity_type == ActivityType::Login)
            .map(|e| e.envelope.occurred_at.div_euclid(DAY_MS))
            .collect();
        match leaf.metric {
            Metric::LoginDays => days.len() as i64,
            Metric::LoginStreak => {
                let (mut best, mut run, mut prev) = (0, 0, None);
                for d in days {
                    run = if prev == Some(d - 1) { run + 1 } else { 1 };
                    best = best.max(run);
                    prev = Some(d);
                }
                best
            }
            Metric::QuestCompleted => inside
                .iter()
                .filter(|e| e.activity_type == ActivityType::QuestCompleted)
                .filter(|e| filter.quest_id.is_none() || e.quest_id == filter.quest_id)
                .count() as i64,
            Metric::ItemAcquired => items(ActivityType::ItemAcquired),
            Metric::ItemUsed => items(ActivityType::ItemUsed),
            Metric::Level => inside
                .iter()
                .filter_map(|e| e.new_level)
                .max()
                .map_or(0, i64::from),
        }
    }

    fn met(condition: &Condition, events: &[UserActivityEvent], window: Window) -> bool {
        match condition {
            Condition::Leaf(leaf) => measure(events, window, leaf) >= i64::from(leaf.value),
            Condition::All { all } => all.iter().all(|c| met(c, events, window)),
            Condition::Any { any } => any.iter().any(|c| met(c, events, window)),
        }
    }

    /// Plans, checks every record is valid, in the window and not in the future, and that the
    /// condition is met.
    fn planned(condition: &Condition, window: Window) -> Vec<UserActivityEvent> {
        let events = plan(condition, window, NOW, USER).unwrap();
        for e in &events {
            assert!(crate::mix::is_valid(e), "{e:?}");
            assert_eq!(e.user_id, USER);
            assert_eq!(e.envelope.producer, "game-sim");
            let at = e.envelope.occurred_at;
            assert!(
                at >= window.starts_at && at < window.ends_at,
                "{e:?} outside"
            );
            assert!(at <= NOW, "{e:?} in the future");
        }
        let ids: BTreeSet<_> = events.iter().map(|e| e.envelope.message_id).collect();
        assert_eq!(ids.len(), events.len(), "message ids are fresh");
        assert!(
            met(condition, &events, window),
            "{condition:?} not met by {events:#?}"
        );
        events
    }

    fn kinds(events: &[UserActivityEvent]) -> HashMap<ActivityType, usize> {
        let mut map = HashMap::new();
        for e in events {
            *map.entry(e.activity_type).or_default() += 1;
        }
        map
    }

    #[test]
    fn login_days_and_streak_log_in_on_consecutive_days_ending_today() {
        for metric in [Metric::LoginDays, Metric::LoginStreak] {
            let events = planned(&leaf(metric, 5), days_ago(10));
            assert_eq!(events.len(), 5);
            let days: Vec<i64> = events
                .iter()
                .map(|e| e.envelope.occurred_at.div_euclid(DAY_MS))
                .collect();
            let today = NOW.div_euclid(DAY_MS);
            assert_eq!(days, (today - 4..=today).collect::<Vec<_>>());
        }
    }

    #[test]
    fn logins_on_the_first_day_are_not_before_the_start() {
        // Started at 20:00 four days ago: day one is only 4 hours long, and 15:00 is too early.
        let window = Window {
            starts_at: (NOW.div_euclid(DAY_MS) - 4) * DAY_MS + 20 * 3_600_000,
            ends_at: NOW + DAY_MS,
        };
        let events = planned(&leaf(Metric::LoginStreak, 5), window);
        assert_eq!(events[0].envelope.occurred_at, window.starts_at);
    }

    #[test]
    fn a_window_too_short_for_the_days_is_an_error() {
        let window = days_ago(2); // today and the two days before
        assert!(plan(&leaf(Metric::LoginDays, 3), window, NOW, USER).is_ok());
        let error = plan(&leaf(Metric::LoginDays, 4), window, NOW, USER).unwrap_err();
        assert!(
            matches!(
                error,
                PlanError::WindowTooShort {
                    needed: 4,
                    available: 3,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("only 3 UTC day(s)"), "{error}");
    }

    #[test]
    fn an_event_not_started_is_an_error() {
        let window = Window {
            starts_at: NOW + 1000,
            ends_at: NOW + DAY_MS,
        };
        let error = plan(&leaf(Metric::Level, 3), window, NOW, USER).unwrap_err();
        assert!(matches!(error, PlanError::NotStarted { .. }), "{error:?}");
    }

    #[test]
    fn an_event_that_ended_gets_activity_at_its_last_moment() {
        let window = Window {
            starts_at: NOW - 3 * DAY_MS,
            ends_at: NOW - DAY_MS,
        };
        let events = planned(&leaf(Metric::LoginDays, 2), window);
        assert_eq!(events[1].envelope.occurred_at, window.ends_at - 1);
    }

    #[test]
    fn quest_counts_use_the_filters_quest_or_a_default() {
        let events = planned(&leaf(Metric::QuestCompleted, 3), days_ago(1));
        assert_eq!(events.len(), 3);
        assert!(
            events
                .iter()
                .all(|e| e.quest_id.as_deref() == Some(DEFAULT_QUEST))
        );
        assert!(events.iter().all(|e| e.envelope.occurred_at == NOW));

        let events = planned(
            &filtered(Metric::QuestCompleted, 2, Some("dragon"), None),
            days_ago(1),
        );
        assert_eq!(events.len(), 2);
        assert!(
            events
                .iter()
                .all(|e| e.quest_id.as_deref() == Some("dragon"))
        );
    }

    #[test]
    fn item_counts_use_the_filters_item_in_one_record() {
        for (metric, kind) in [
            (Metric::ItemAcquired, ActivityType::ItemAcquired),
            (Metric::ItemUsed, ActivityType::ItemUsed),
        ] {
            let events = planned(&filtered(metric, 7, None, Some("gem")), days_ago(1));
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].activity_type, kind);
            assert_eq!(events[0].item_code.as_deref(), Some("gem"));
            assert_eq!(events[0].item_count, Some(7));

            let events = planned(&leaf(metric, 4), days_ago(1));
            assert_eq!(events[0].item_code.as_deref(), Some(DEFAULT_ITEM));
            assert_eq!(events[0].item_count, Some(4));
        }
    }

    #[test]
    fn level_is_one_level_up() {
        let events = planned(&leaf(Metric::Level, 12), days_ago(1));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].activity_type, ActivityType::LevelUp);
        assert_eq!(events[0].new_level, Some(12));
    }

    #[test]
    fn zero_targets_need_nothing() {
        assert!(planned(&leaf(Metric::QuestCompleted, 0), days_ago(1)).is_empty());
    }

    #[test]
    fn all_meets_every_child_without_repeating_shared_requirements() {
        let condition = Condition::All {
            all: vec![
                leaf(Metric::LoginDays, 3),
                leaf(Metric::LoginStreak, 2),
                filtered(Metric::QuestCompleted, 2, Some("dragon"), None),
                leaf(Metric::QuestCompleted, 5),
                filtered(Metric::ItemUsed, 1, None, Some("potion")),
                Condition::All {
                    all: vec![leaf(Metric::Level, 4), leaf(Metric::Level, 9)],
                },
            ],
        };
        let events = planned(&condition, days_ago(5));
        let by_kind = kinds(&events);
        assert_eq!(by_kind[&ActivityType::Login], 3);
        // 2 dragon quests also count towards the 5 of any quest: 3 more of the default.
        assert_eq!(by_kind[&ActivityType::QuestCompleted], 5);
        assert_eq!(by_kind[&ActivityType::ItemUsed], 1);
        assert_eq!(by_kind[&ActivityType::LevelUp], 1);
        assert!(events.iter().any(|e| e.new_level == Some(9)));
        // In time order.
        assert!(
            events
                .windows(2)
                .all(|w| w[0].envelope.occurred_at <= w[1].envelope.occurred_at)
        );
    }

    #[test]
    fn any_meets_the_cheapest_child() {
        let condition = Condition::Any {
            any: vec![
                leaf(Metric::QuestCompleted, 10),
                leaf(Metric::LoginDays, 3),
                filtered(Metric::ItemAcquired, 50, None, Some("gem")),
                leaf(Metric::Level, 2),
            ],
        };
        let events = planned(&condition, days_ago(5));
        assert_eq!(events.len(), 1);
        // Items and level both cost one record; the first wins.
        assert_eq!(events[0].activity_type, ActivityType::ItemAcquired);
    }

    #[test]
    fn any_skips_children_that_cannot_be_met() {
        let condition = Condition::Any {
            any: vec![
                leaf(Metric::LoginStreak, 30),
                leaf(Metric::QuestCompleted, 4),
            ],
        };
        let events = planned(&condition, days_ago(2));
        assert_eq!(kinds(&events)[&ActivityType::QuestCompleted], 4);

        let impossible = Condition::Any {
            any: vec![leaf(Metric::LoginStreak, 30)],
        };
        let error = plan(&impossible, days_ago(2), NOW, USER).unwrap_err();
        assert!(matches!(error, PlanError::WindowTooShort { .. }));
        let empty = Condition::Any { any: vec![] };
        assert_eq!(
            plan(&empty, days_ago(2), NOW, USER),
            Err(PlanError::EmptyAny)
        );
    }

    #[test]
    fn all_of_any_plans_each_branch() {
        let condition = Condition::All {
            all: vec![
                Condition::Any {
                    any: vec![leaf(Metric::LoginDays, 2), leaf(Metric::QuestCompleted, 9)],
                },
                Condition::Any {
                    any: vec![filtered(Metric::ItemUsed, 3, None, Some("potion"))],
                },
            ],
        };
        let events = planned(&condition, days_ago(3));
        let by_kind = kinds(&events);
        assert_eq!(by_kind[&ActivityType::Login], 2);
        assert_eq!(by_kind[&ActivityType::ItemUsed], 1);
        assert!(!by_kind.contains_key(&ActivityType::QuestCompleted));
    }

    #[test]
    fn other_operators_are_refused() {
        let condition = Condition::Leaf(Leaf {
            metric: Metric::Level,
            op: "<".into(),
            value: 3,
            filter: None,
        });
        assert_eq!(
            plan(&condition, days_ago(1), NOW, USER),
            Err(PlanError::UnsupportedOp("<".into()))
        );
    }

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(rfc3339(NOW), "2026-01-01T15:00:00Z");
        assert_eq!(parse_rfc3339("2026-01-01T15:00:00Z").unwrap(), NOW);
        assert_eq!(
            parse_rfc3339("2026-01-01T16:00:00.250+01:00").unwrap(),
            NOW + 250
        );
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
