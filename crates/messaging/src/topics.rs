//! The platform's topics and how they are created. The names themselves belong to the
//! contracts (`contracts::topics`).

pub use contracts::topics::*;

/// Where messages that cannot be processed go: `<topic>.dlq`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// A topic and how it is created when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
        }
    }
}

/// Every topic of the platform with its dead-letter topic. Activity is the high-volume
/// stream, so it gets the most partitions (the unit of consumer parallelism).
pub fn all() -> Vec<TopicSpec> {
    let main = [
        (USER_ACTIVITY, 6),
        (USER_EVENTS, 3),
        (GRANT_COMMANDS, 3),
        (GRANT_RESULTS, 3),
    ];
    main.iter()
        .flat_map(|&(name, partitions)| {
            [
                TopicSpec::new(name, partitions),
                TopicSpec::new(dead_letter_topic(name), 1),
            ]
        })
        .collect()
}
