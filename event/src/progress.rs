//! Players' progress towards events' conditions, folded from `game.user-activity`.
//!
//! One document per (event, user) holds exactly what that event's condition asks about:
//! counters keyed by metric (and quest id or item code when a leaf filters on one), the days
//! with a login, and the highest level. Only activity whose `occurredAt` lies inside the
//! event's window counts. A batch of activity is folded in memory first (one update per
//! event and user, however many messages they sent) and written with one `update` command,
//! so the cost per batch is a few round trips rather than one per message.
//!
//! Counters follow the condition as it is when the activity arrives. Changing the condition
//! of a DRAFT or INACTIVE event therefore starts any new counter from zero (an ACTIVE
//! event's condition cannot change).

use crate::store::EventDoc;
use contracts::{ActivityType, UserActivityEvent};
use http_api::events::{Condition, EventStatus, Leaf, LeafProgress, Metric, Progress};
use messaging::consumer::{Delivery, Handler, HandlerError, Outcome};
use mongo_kit::mongodb::bson::{Bson, DateTime, Document, doc};
use mongo_kit::mongodb::{ClientSession, Collection, Database};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub const CONSUMER_GROUP: &str = "event.progress";
const COLLECTION: &str = "progress";
const DAY_MS: i64 = 86_400_000;
/// Activity stamped further ahead than this is refused: a clock that far off would let a
/// player earn days they have not played.
const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub event_id: String,
    pub user_id: String,
    #[serde(default)]
    pub counts: HashMap<String, i64>,
    /// UTC days (days since the epoch) with at least one login.
    #[serde(default)]
    pub login_days: Vec<i64>,
    #[serde(default)]
    pub level: i64,
}

pub fn progress_id(event_id: &str, user_id: &str) -> String {
    format!("{event_id}:{user_id}")
}

/// The counter a leaf reads: the metric, narrowed by the filter's quest id or item code.
/// Those ids become BSON field names, so `%`, `.` and `$` are escaped.
fn counter_key(metric: Metric, filter_id: Option<&str>) -> String {
    let metric = match metric {
        Metric::QuestCompleted => "quest",
        Metric::ItemAcquired => "acquired",
        Metric::ItemUsed => "used",
        Metric::LoginDays | Metric::LoginStreak | Metric::Level => "other",
    };
    match filter_id {
        None => metric.to_owned(),
        Some(id) => {
            let escaped = id
                .replace('%', "%25")
                .replace('.', "%2E")
                .replace('$', "%24");
            format!("{metric}:{escaped}")
        }
    }
}

fn filter_id(leaf: &Leaf) -> Option<&str> {
    let filter = leaf.filter.as_ref()?;
    filter.quest_id.as_deref().or(filter.item_code.as_deref())
}

/// Every leaf of a condition tree, in document order.
pub fn leaves(condition: &Condition) -> Vec<&Leaf> {
    let mut out = Vec::new();
    fn walk<'a>(node: &'a Condition, out: &mut Vec<&'a Leaf>) {
        match node {
            Condition::All { all } => all.iter().for_each(|c| walk(c, out)),
            Condition::Any { any } => any.iter().for_each(|c| walk(c, out)),
            Condition::Leaf(leaf) => out.push(leaf),
        }
    }
    walk(condition, &mut out);
    out
}

/// What one leaf currently measures for a player.
fn current(leaf: &Leaf, progress: &ProgressDoc) -> i64 {
    match leaf.metric {
        Metric::LoginDays => progress.login_days.len() as i64,
        Metric::LoginStreak => longest_streak(&progress.login_days),
        Metric::Level => progress.level,
        metric => progress
            .counts
            .get(&counter_key(metric, filter_id(leaf)))
            .copied()
            .unwrap_or(0),
    }
}

fn longest_streak(days: &[i64]) -> i64 {
    let days: BTreeSet<i64> = days.iter().copied().collect();
    let (mut best, mut run, mut previous) = (0, 0, None);
    for day in days {
        run = if previous == Some(day - 1) {
            run + 1
        } else {
            1
        };
        best = best.max(run);
        previous = Some(day);
    }
    best
}

fn met(node: &Condition, progress: &ProgressDoc) -> bool {
    match node {
        Condition::All { all } => all.iter().all(|c| met(c, progress)),
        Condition::Any { any } => any.iter().any(|c| met(c, progress)),
        Condition::Leaf(leaf) => current(leaf, progress) >= i64::from(leaf.value),
    }
}

/// The player's standing against the event's condition, leaf by leaf.
pub fn evaluate(event: &EventDoc, user_id: &str, progress: Option<&ProgressDoc>) -> Progress {
    let empty = ProgressDoc::default();
    let progress = progress.unwrap_or(&empty);
    Progress {
        event_id: event.id.clone(),
        user_id: user_id.to_owned(),
        met: met(&event.condition, progress),
        leaves: leaves(&event.condition)
            .into_iter()
            .map(|leaf| {
                let value = current(leaf, progress);
                LeafProgress {
                    metric: leaf.metric,
                    filter: leaf.filter.clone(),
                    current: value,
                    target: leaf.value,
                    met: value >= i64::from(leaf.value),
                }
            })
            .collect(),
    }
}

/// One (event, user) document's change from a batch of activity.
#[derive(Debug, Default, PartialEq)]
struct Change {
    counts: BTreeMap<String, i64>,
    login_days: BTreeSet<i64>,
    level: Option<i64>,
}

/// Why an activity record cannot count, or `None` when it is fine.
fn invalid(event: &UserActivityEvent, now_ms: i64) -> Option<String> {
    let needs = |what: &str| Some(format!("{:?} without {what}", event.activity_type));
    if event.user_id.trim().is_empty() {
        return Some("activity without a userId".into());
    }
    if event.envelope.occurred_at > now_ms + MAX_CLOCK_SKEW_MS {
        return Some(format!(
            "occurredAt {} is more than 5 minutes in the future",
            event.envelope.occurred_at
        ));
    }
    match event.activity_type {
        ActivityType::Login => None,
        ActivityType::QuestCompleted if blank(&event.quest_id) => needs("a questId"),
        ActivityType::QuestCompleted => None,
        ActivityType::ItemAcquired | ActivityType::ItemUsed if blank(&event.item_code) => {
            needs("an itemCode")
        }
        ActivityType::ItemAcquired | ActivityType::ItemUsed
            if event.item_count.is_none_or(|n| n <= 0) =>
        {
            needs("a positive itemCount")
        }
        ActivityType::ItemAcquired | ActivityType::ItemUsed => None,
        ActivityType::LevelUp if event.new_level.is_none_or(|n| n <= 0) => {
            needs("a positive newLevel")
        }
        ActivityType::LevelUp => None,
        ActivityType::Unknown => Some("an activity type this build does not know".into()),
    }
}

fn blank(value: &Option<String>) -> bool {
    value.as_deref().is_none_or(|v| v.trim().is_empty())
}

/// Adds what `activity` means for `event`'s condition to `change`. Returns whether it added
/// to a counter: the one effect that folding the same activity again would repeat (login
/// days are a set and the level a maximum).
fn fold(event: &EventDoc, activity: &UserActivityEvent, change: &mut Change) -> bool {
    let at = activity.envelope.occurred_at;
    if at < event.starts_at.timestamp_millis() || at >= event.ends_at.timestamp_millis() {
        return false;
    }
    let mut incremented = false;
    // Two leaves reading the same counter must not count one activity twice.
    let mut counted = BTreeSet::new();
    for leaf in leaves(&event.condition) {
        let wanted = filter_id(leaf);
        let (metric, id, amount) = match activity.activity_type {
            ActivityType::Login
                if matches!(leaf.metric, Metric::LoginDays | Metric::LoginStreak) =>
            {
                change.login_days.insert(at.div_euclid(DAY_MS));
                continue;
            }
            ActivityType::LevelUp if leaf.metric == Metric::Level => {
                let level = i64::from(activity.new_level.unwrap_or(0));
                change.level = change.level.max(Some(level));
                continue;
            }
            ActivityType::QuestCompleted => (Metric::QuestCompleted, &activity.quest_id, 1),
            ActivityType::ItemAcquired => (
                Metric::ItemAcquired,
                &activity.item_code,
                activity.item_count.unwrap_or(0),
            ),
            ActivityType::ItemUsed => (
                Metric::ItemUsed,
                &activity.item_code,
                activity.item_count.unwrap_or(0),
            ),
            _ => continue,
        };
        if leaf.metric != metric || wanted.is_some_and(|w| Some(w) != id.as_deref()) {
            continue;
        }
        let key = counter_key(metric, wanted);
        if counted.insert(key.clone()) {
            *change.counts.entry(key).or_insert(0) += i64::from(amount);
            incremented = true;
        }
    }
    incremented
}

/// Folds `game.user-activity` into progress documents.
#[derive(Clone)]
pub struct ProgressFolder {
    db: Database,
    events: Collection<EventDoc>,
    progress: Collection<ProgressDoc>,
}

impl ProgressFolder {
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            events: db.collection("events"),
            progress: db.collection(COLLECTION),
        }
    }

    pub async fn get(
        &self,
        event_id: &str,
        user_id: &str,
    ) -> Result<Option<ProgressDoc>, mongo_kit::mongodb::error::Error> {
        self.progress
            .find_one(doc! { "_id": progress_id(event_id, user_id) })
            .await
    }

    /// The progress of each of `users` in the event, by user id (absent: no activity yet).
    pub async fn get_many(
        &self,
        event_id: &str,
        users: &[&str],
    ) -> Result<HashMap<String, ProgressDoc>, mongo_kit::mongodb::error::Error> {
        use futures::TryStreamExt;
        let ids: Vec<String> = users.iter().map(|u| progress_id(event_id, u)).collect();
        self.progress
            .find(doc! { "_id": { "$in": ids } })
            .await?
            .map_ok(|p| (p.user_id.clone(), p))
            .try_collect()
            .await
    }

    /// The progress of `user` in each of `events`, by event id (absent: no activity yet).
    pub async fn of_user(
        &self,
        user: &str,
        events: &[&str],
    ) -> Result<HashMap<String, ProgressDoc>, mongo_kit::mongodb::error::Error> {
        use futures::TryStreamExt;
        let ids: Vec<String> = events.iter().map(|e| progress_id(e, user)).collect();
        self.progress
            .find(doc! { "_id": { "$in": ids } })
            .await?
            .map_ok(|p| (p.event_id.clone(), p))
            .try_collect()
            .await
    }

    /// Events whose window overlaps `[from, to]` and that still count activity.
    async fn events_between(
        &self,
        session: &mut ClientSession,
        from: i64,
        to: i64,
    ) -> Result<Vec<EventDoc>, HandlerError> {
        let ended = mongo_kit::mongodb::bson::to_bson(&EventStatus::Ended)
            .map_err(|e| HandlerError::Retryable(e.to_string()))?;
        let filter = doc! {
            "status": { "$ne": ended },
            "startsAt": { "$lte": DateTime::from_millis(to) },
            "endsAt": { "$gt": DateTime::from_millis(from) },
        };
        Ok(mongo_kit::find_all(&self.events, filter, session).await?)
    }
}

impl Handler for ProgressFolder {
    type Message = UserActivityEvent;

    async fn handle(
        &self,
        session: &mut ClientSession,
        batch: &[Delivery<UserActivityEvent>],
    ) -> Result<Vec<Outcome>, HandlerError> {
        let now = DateTime::now().timestamp_millis();
        let mut outcomes: Vec<Outcome> = batch
            .iter()
            .map(|d| match invalid(&d.message, now) {
                Some(reason) => Outcome::Invalid(reason),
                None => Outcome::Done,
            })
            .collect();
        let valid = || {
            batch
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| matches!(o, Outcome::Done))
                .map(|(d, _)| d.message.envelope.occurred_at)
        };
        let (Some(from), Some(to)) = (valid().min(), valid().max()) else {
            return Ok(outcomes);
        };
        let events = self.events_between(session, from, to).await?;
        // Keyed by reference into the batch and the events: no strings copied per activity.
        let mut changes: BTreeMap<(&str, &str), Change> = BTreeMap::new();
        for (delivery, outcome) in batch.iter().zip(outcomes.iter_mut()) {
            if *outcome != Outcome::Done {
                continue;
            }
            let activity = &delivery.message;
            let mut incremented = false;
            for event in &events {
                let change = changes
                    .entry((event.id.as_str(), activity.user_id.as_str()))
                    .or_default();
                incremented |= fold(event, activity, change);
            }
            // Only a counter increment would be repeated by folding the activity again; the
            // rest need no inbox record (a re-send is folded again, to no further effect).
            if !incremented {
                *outcome = Outcome::Repeatable;
            }
        }
        changes.retain(|_, c| *c != Change::default());
        if !changes.is_empty() {
            self.write(session, changes).await?;
        }
        Ok(outcomes)
    }
}

impl ProgressFolder {
    /// All changes in one `update` command: one round trip whatever the batch holds.
    async fn write(
        &self,
        session: &mut ClientSession,
        changes: BTreeMap<(&str, &str), Change>,
    ) -> Result<(), HandlerError> {
        let updates: Vec<Document> = changes
            .into_iter()
            .map(|((event_id, user_id), change)| {
                let mut update = doc! {
                    "$setOnInsert": { "eventId": event_id, "userId": user_id },
                };
                if !change.counts.is_empty() {
                    let counts: Document = change
                        .counts
                        .into_iter()
                        .map(|(k, v)| (format!("counts.{k}"), Bson::Int64(v)))
                        .collect();
                    update.insert("$inc", counts);
                }
                if !change.login_days.is_empty() {
                    let days: Vec<i64> = change.login_days.into_iter().collect();
                    update.insert("$addToSet", doc! { "loginDays": { "$each": days } });
                }
                if let Some(level) = change.level {
                    update.insert("$max", doc! { "level": level });
                }
                mongo_kit::update_statement(
                    doc! { "_id": progress_id(event_id, user_id) },
                    update,
                    true,
                )
            })
            .collect();
        mongo_kit::update_each(&self.db, COLLECTION, updates, session).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::Envelope;
    use serde_json::json;

    fn event(condition: serde_json::Value) -> EventDoc {
        EventDoc {
            id: "e1".into(),
            name: "n".into(),
            description: String::new(),
            starts_at: DateTime::from_millis(10 * DAY_MS),
            ends_at: DateTime::from_millis(20 * DAY_MS),
            status: EventStatus::Active,
            condition: serde_json::from_value(condition).unwrap(),
            created_by: "op".into(),
            created_at: DateTime::from_millis(0),
            updated_at: DateTime::from_millis(0),
        }
    }

    fn activity(kind: ActivityType, day: i64) -> UserActivityEvent {
        let mut envelope = Envelope::new("test");
        envelope.occurred_at = day * DAY_MS + 3_600_000;
        UserActivityEvent {
            envelope,
            user_id: "u1".into(),
            activity_type: kind,
            quest_id: None,
            item_code: None,
            item_count: None,
            new_level: None,
        }
    }

    fn progress_after(event: &EventDoc, activities: &[UserActivityEvent]) -> Progress {
        let mut change = Change::default();
        for a in activities {
            fold(event, a, &mut change);
        }
        let doc = ProgressDoc {
            counts: change.counts.into_iter().collect(),
            login_days: change.login_days.into_iter().collect(),
            level: change.level.unwrap_or(0),
            ..Default::default()
        };
        evaluate(event, "u1", Some(&doc))
    }

    #[test]
    fn logins_count_distinct_days_and_the_longest_streak_inside_the_window() {
        let e = event(json!({ "all": [
            { "metric": "LOGIN_DAYS", "op": ">=", "value": 4 },
            { "metric": "LOGIN_STREAK", "op": ">=", "value": 3 },
        ]}));
        // Day 9 is before the window, day 20 after it; day 12 twice.
        let days = [9, 11, 12, 12, 13, 15, 20];
        let logins: Vec<_> = days
            .iter()
            .map(|&d| activity(ActivityType::Login, d))
            .collect();
        let p = progress_after(&e, &logins);
        assert_eq!(p.leaves[0].current, 4, "days 11, 12, 13, 15");
        assert_eq!(p.leaves[1].current, 3, "11-13");
        assert!(p.met);
    }

    #[test]
    fn filtered_counters_count_only_their_quest_or_item_and_quantities_add_up() {
        let e = event(json!({ "any": [
            { "metric": "QUEST_COMPLETED", "op": ">=", "value": 2, "filter": { "questId": "dragon.slayer" } },
            { "metric": "QUEST_COMPLETED", "op": ">=", "value": 3 },
            { "metric": "ITEM_USED", "op": ">=", "value": 5, "filter": { "itemCode": "potion" } },
        ]}));
        let quest = |id: &str| {
            let mut a = activity(ActivityType::QuestCompleted, 12);
            a.quest_id = Some(id.into());
            a
        };
        let used = |code: &str, n: i32| {
            let mut a = activity(ActivityType::ItemUsed, 12);
            a.item_code = Some(code.into());
            a.item_count = Some(n);
            a
        };
        let p = progress_after(
            &e,
            &[
                quest("dragon.slayer"),
                quest("other"),
                used("potion", 3),
                used("elixir", 9),
            ],
        );
        let values: Vec<i64> = p.leaves.iter().map(|l| l.current).collect();
        assert_eq!(values, [1, 2, 3]);
        assert!(!p.met);
        let p = progress_after(&e, &[quest("a"), quest("b"), quest("c")]);
        assert!(p.met, "any: three quests of any kind");
    }

    #[test]
    fn the_same_counter_in_two_leaves_counts_each_activity_once() {
        let e = event(json!({ "all": [
            { "metric": "ITEM_ACQUIRED", "op": ">=", "value": 2 },
            { "any": [{ "metric": "ITEM_ACQUIRED", "op": ">=", "value": 4 }] },
        ]}));
        let mut a = activity(ActivityType::ItemAcquired, 12);
        a.item_code = Some("gem".into());
        a.item_count = Some(2);
        let p = progress_after(&e, &[a]);
        assert_eq!(p.leaves[0].current, 2);
        assert_eq!(p.leaves[1].current, 2);
    }

    #[test]
    fn level_is_the_highest_reached_and_unrelated_activity_changes_nothing() {
        let e = event(json!({ "metric": "LEVEL", "op": ">=", "value": 10 }));
        let level = |n: i32| {
            let mut a = activity(ActivityType::LevelUp, 12);
            a.new_level = Some(n);
            a
        };
        let p = progress_after(&e, &[level(12), level(7)]);
        assert_eq!(p.leaves[0].current, 12);
        let mut change = Change::default();
        fold(&e, &activity(ActivityType::Login, 12), &mut change);
        assert_eq!(change, Change::default());
    }

    #[test]
    fn only_counter_increments_are_reported_as_what_a_second_fold_would_repeat() {
        let e = event(json!({ "all": [
            { "metric": "QUEST_COMPLETED", "op": ">=", "value": 1, "filter": { "questId": "dragon" } },
            { "metric": "LOGIN_DAYS", "op": ">=", "value": 1 },
            { "metric": "LEVEL", "op": ">=", "value": 1 },
        ]}));
        let quest = |id: &str, day: i64| {
            let mut a = activity(ActivityType::QuestCompleted, day);
            a.quest_id = Some(id.into());
            a
        };
        let mut level = activity(ActivityType::LevelUp, 12);
        level.new_level = Some(3);
        let mut change = Change::default();
        assert!(fold(&e, &quest("dragon", 12), &mut change));
        assert!(!fold(&e, &quest("goblin", 12), &mut change), "not counted");
        assert!(
            !fold(&e, &quest("dragon", 25), &mut change),
            "outside the window"
        );
        assert!(!fold(&e, &activity(ActivityType::Login, 12), &mut change));
        assert!(!fold(&e, &level, &mut change));
        // Folding the idempotent ones again changes nothing.
        let before = change.counts.clone();
        let (days, top) = (change.login_days.clone(), change.level);
        fold(&e, &activity(ActivityType::Login, 12), &mut change);
        fold(&e, &level, &mut change);
        assert_eq!(
            (change.counts, change.login_days, change.level),
            (before, days, top)
        );
    }

    #[test]
    fn malformed_or_future_activity_is_refused_with_a_reason() {
        let now = 12 * DAY_MS;
        let mut a = activity(ActivityType::ItemAcquired, 11);
        a.item_code = Some("gem".into());
        assert!(invalid(&a, now).unwrap().contains("itemCount"));
        a.item_count = Some(1);
        assert_eq!(invalid(&a, now), None);
        a.envelope.occurred_at = now + MAX_CLOCK_SKEW_MS + 1;
        assert!(invalid(&a, now).unwrap().contains("future"));
        let q = activity(ActivityType::QuestCompleted, 11);
        assert!(invalid(&q, now).unwrap().contains("questId"));
        assert!(invalid(&activity(ActivityType::Unknown, 11), now).is_some());
    }

    #[test]
    fn ids_with_dots_and_dollars_make_safe_field_names() {
        assert_eq!(
            counter_key(Metric::ItemUsed, Some("a.b$c%")),
            "used:a%2Eb%24c%25"
        );
        assert_eq!(counter_key(Metric::QuestCompleted, None), "quest");
    }
}
