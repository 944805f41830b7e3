//! What simulated players do: a weighted mix of activity over a small catalogue of quests and
//! items, with each player's level only ever going up.

use crate::PRODUCER;
use contracts::{ActivityType, Envelope, UserActivityEvent};
use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Quests players complete.
pub const QUESTS: &[&str] = &[
    "tutorial",
    "dragon-slayer",
    "lost-caravan",
    "daily-hunt",
    "tower-climb",
    "fishing-derby",
];

/// Items players acquire and use.
pub const ITEMS: &[&str] = &[
    "potion",
    "elixir",
    "iron-sword",
    "wood-shield",
    "gem",
    "scroll",
];

/// Relative weights of each activity type (they add up to 100).
pub const WEIGHTS: &[(ActivityType, u32)] = &[
    (ActivityType::Login, 10),
    (ActivityType::QuestCompleted, 35),
    (ActivityType::ItemAcquired, 30),
    (ActivityType::ItemUsed, 15),
    (ActivityType::LevelUp, 10),
];

struct SimUser {
    id: String,
    level: i32,
}

/// A population of simulated players and the source of their next action.
pub struct Mix {
    users: Vec<SimUser>,
    /// Drives the choices; reproducible when seeded (`StdRng` gives the same sequence for
    /// a seed on every platform).
    choices: StdRng,
    /// Message ids: always seeded from the OS, so two runs with the same seed never share
    /// an id (the platform would count the second run's facts as duplicates).
    ids: StdRng,
    /// Picks an index of [`WEIGHTS`].
    kinds: WeightedIndex<u32>,
}

impl Mix {
    /// `users` players named `<prefix>1` .. `<prefix><users>`, all at level 1.
    pub fn new(users: usize, prefix: &str, seed: Option<u64>) -> Self {
        assert!(users > 0, "at least one user");
        Self {
            users: (1..=users)
                .map(|n| SimUser {
                    id: format!("{prefix}{n}"),
                    level: 1,
                })
                .collect(),
            choices: seed.map_or_else(StdRng::from_os_rng, StdRng::seed_from_u64),
            ids: StdRng::from_os_rng(),
            kinds: WeightedIndex::new(WEIGHTS.iter().map(|&(_, w)| w))
                .expect("WEIGHTS are positive"),
        }
    }

    pub fn user_ids(&self) -> impl Iterator<Item = &str> {
        self.users.iter().map(|u| u.id.as_str())
    }

    /// The next thing some player does, happening at `now_ms`.
    pub fn next_event(&mut self, now_ms: i64) -> UserActivityEvent {
        let index = self.choices.random_range(0..self.users.len());
        let kind = WEIGHTS[self.kinds.sample(&mut self.choices)].0;
        let mut event = UserActivityEvent {
            envelope: Envelope {
                message_id: uuid_v7(&mut self.ids, now_ms),
                occurred_at: now_ms,
                producer: PRODUCER.to_owned(),
                correlation_id: None,
            },
            user_id: self.users[index].id.clone(),
            activity_type: kind,
            quest_id: None,
            item_code: None,
            item_count: None,
            new_level: None,
        };
        match kind {
            ActivityType::QuestCompleted => {
                event.quest_id = Some(self.pick(QUESTS).to_owned());
            }
            ActivityType::ItemAcquired | ActivityType::ItemUsed => {
                event.item_code = Some(self.pick(ITEMS).to_owned());
                event.item_count = Some(self.choices.random_range(1..=5));
            }
            ActivityType::LevelUp => {
                let user = &mut self.users[index];
                user.level += 1;
                event.new_level = Some(user.level);
            }
            ActivityType::Login | ActivityType::Unknown => {}
        }
        event
    }

    fn pick(&mut self, from: &[&'static str]) -> &'static str {
        from.choose(&mut self.choices)
            .expect("the catalogues are not empty")
    }
}

/// A time-ordered (version 7) UUID for a message made at `now_ms`: ids made close in time
/// sort close together, so the consumer's inbox index grows at its end instead of at random
/// places all over it (README, "For game-server developers").
fn uuid_v7(rng: &mut impl Rng, now_ms: i64) -> uuid::Uuid {
    let random: [u8; 10] = rng.random();
    uuid::Builder::from_unix_timestamp_millis(now_ms.max(0) as u64, &random).into_uuid()
}

/// Whether `event` carries what its activity type requires (what the platform checks; a
/// record breaking these rules is dead-lettered).
pub fn is_valid(event: &UserActivityEvent) -> bool {
    let quest = event.quest_id.as_deref().is_some_and(|q| !q.is_empty());
    let item = event.item_code.as_deref().is_some_and(|i| !i.is_empty())
        && event.item_count.is_some_and(|c| c > 0);
    !event.user_id.is_empty()
        && match event.activity_type {
            ActivityType::Login => true,
            ActivityType::QuestCompleted => quest,
            ActivityType::ItemAcquired | ActivityType::ItemUsed => item,
            ActivityType::LevelUp => event.new_level.is_some_and(|l| l > 0),
            ActivityType::Unknown => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn every_event_is_valid_for_its_type_and_levels_only_go_up() {
        let mut mix = Mix::new(20, "sim-", Some(42));
        let mut levels: HashMap<String, i32> = HashMap::new();
        let mut kinds: HashMap<ActivityType, usize> = HashMap::new();
        let mut ids = HashSet::new();
        let n = 20_000;
        for i in 0..n {
            let event = mix.next_event(1_000 + i);
            assert!(is_valid(&event), "{event:?}");
            assert!(event.user_id.starts_with("sim-"));
            assert_eq!(event.envelope.producer, "game-sim");
            assert_eq!(event.envelope.occurred_at, 1_000 + i);
            assert!(ids.insert(event.envelope.message_id), "duplicate id");
            *kinds.entry(event.activity_type).or_default() += 1;
            if let Some(level) = event.new_level {
                let previous = levels.insert(event.user_id.clone(), level).unwrap_or(1);
                assert!(
                    level > previous,
                    "{} went from {previous} to {level}",
                    event.user_id
                );
            }
            if let Some(count) = event.item_count {
                assert!((1..=5).contains(&count));
            }
            if let Some(quest) = &event.quest_id {
                assert!(QUESTS.contains(&quest.as_str()));
            }
            if let Some(item) = &event.item_code {
                assert!(ITEMS.contains(&item.as_str()));
            }
        }
        // The mix follows the weights (within a few percent).
        for &(kind, weight) in WEIGHTS {
            let share = kinds[&kind] as f64 * 100.0 / n as f64;
            assert!(
                (share - f64::from(weight)).abs() < 2.0,
                "{kind:?}: {share}%"
            );
        }
        // Every player shows up.
        let seen: HashSet<_> = levels.keys().collect();
        assert!(seen.len() >= 15);
    }

    #[test]
    fn the_seed_makes_the_choices_reproducible_but_never_the_ids() {
        let mut a = Mix::new(5, "u", Some(1));
        let mut b = Mix::new(5, "u", Some(1));
        for _ in 0..100 {
            let (x, y) = (a.next_event(0), b.next_event(0));
            assert_eq!(x.user_id, y.user_id);
            assert_eq!(x.activity_type, y.activity_type);
            assert_eq!(x.new_level, y.new_level);
            assert_ne!(x.envelope.message_id, y.envelope.message_id);
        }
        assert_eq!(
            a.user_ids().collect::<Vec<_>>(),
            ["u1", "u2", "u3", "u4", "u5"]
        );
    }

    #[test]
    fn uuids_are_version_7_distinct_and_ordered_by_their_millisecond() {
        let mut rng = StdRng::from_os_rng();
        let (x, y) = (uuid_v7(&mut rng, 1_000), uuid_v7(&mut rng, 1_000));
        assert_eq!(x.get_version_num(), 7);
        assert_ne!(x, y);
        assert!(uuid_v7(&mut rng, 1_001) > x.max(y));
        assert_eq!(x.get_timestamp().map(|t| t.to_unix().0), Some(1));
    }

    #[test]
    fn invalid_events_are_recognised() {
        let mut event = Mix::new(1, "u", Some(3)).next_event(0);
        event.activity_type = ActivityType::ItemUsed;
        event.item_code = Some("gem".into());
        event.item_count = Some(0);
        assert!(!is_valid(&event));
        event.activity_type = ActivityType::QuestCompleted;
        event.quest_id = None;
        assert!(!is_valid(&event));
    }
}
