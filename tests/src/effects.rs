//! A test handler whose every application leaves a trace: one `effects` document per message
//! applied. Counting them per message id tells whether something happened exactly once.
//!
//! UserActivityEvents with `itemCount < 0` are invalid content. Those naming the quest
//! `needs-fix` are rejected until a `{_id: "fixed"}` document exists in `flags`: a cause that
//! can be fixed, for replay tests. Those naming the quest `fail-once` make the first attempt
//! at their batch fail with a retryable error, after their effect was applied (and rolled
//! back). Every applied message also counts, through `messaging::consumer::on_commit`, in
//! [`committed`]: how many times its effect was committed as seen from this process.

use contracts::UserActivityEvent;
use messaging::consumer::{
    ConsumerConfig, ConsumerRunner, Delivery, Handler, HandlerError, Outcome,
};
use messaging::dlq::DeadLetters;
use messaging::{SchemaRegistry, kafka};
use mongo_kit::Mongo;
use mongo_kit::mongodb::bson::{Document, doc};
use mongo_kit::mongodb::{ClientSession, Collection, Database};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use tokio_util::sync::CancellationToken;

type Counts = LazyLock<Mutex<HashMap<String, u32>>>;

/// Per message id: effects committed (counted through `on_commit`), and batches that failed
/// on purpose (`fail-once`). In-process: for consumers started with [`start_consumer`].
static COMMITTED: Counts = LazyLock::new(Mutex::default);
static FAILED_ONCE: Counts = LazyLock::new(Mutex::default);

fn bump(counts: &Counts, id: &str) -> u32 {
    let mut counts = counts.lock().expect("never poisoned");
    let count = counts.entry(id.to_owned()).or_default();
    *count += 1;
    *count
}

/// How many times the effect of `message_id` was committed by a consumer of this process.
pub fn committed(message_id: &str) -> u32 {
    let counts = COMMITTED.lock().expect("never poisoned");
    counts.get(message_id).copied().unwrap_or(0)
}

/// Runs the consumer runner with the [`Effects`] handler on `topic` in this process, against
/// the test run's servers. Cancel the token to stop it; the handle ends when it has.
pub fn start_consumer(
    mongo: &Mongo,
    topic: &str,
    group: &str,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let kafka = test_support::kafka();
    let registry = Arc::new(SchemaRegistry::new(&test_support::registry()).unwrap());
    let producer = kafka::producer(&kafka).unwrap();
    let letters = DeadLetters::new(
        mongo.db(),
        producer,
        registry.clone(),
        audit::Audit::new(mongo.db(), "test"),
    );
    let runner = ConsumerRunner::new(
        group,
        &[topic],
        kafka,
        ConsumerConfig::default(),
        Effects::new(mongo.db()),
        registry,
        mongo.clone(),
        letters,
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { runner.run(stop).await.unwrap() }
    });
    (stop, task)
}

pub struct Effects {
    effects: Collection<Document>,
    flags: Collection<Document>,
}

impl Effects {
    pub fn new(db: &Database) -> Self {
        Self {
            effects: db.collection("effects"),
            flags: db.collection("flags"),
        }
    }
}

impl Handler for Effects {
    type Message = UserActivityEvent;

    async fn handle(
        &self,
        session: &mut ClientSession,
        batch: &[Delivery<UserActivityEvent>],
    ) -> Result<Vec<Outcome>, HandlerError> {
        let fixed = self
            .flags
            .find_one(doc! { "_id": "fixed" })
            .session(&mut *session)
            .await?
            .is_some();
        let mut outcomes = Vec::with_capacity(batch.len());
        for delivery in batch {
            let event = &delivery.message;
            if event.item_count.is_some_and(|n| n < 0) {
                outcomes.push(Outcome::Invalid("itemCount must not be negative".into()));
                continue;
            }
            if event.quest_id.as_deref() == Some("needs-fix") && !fixed {
                outcomes.push(Outcome::Invalid(
                    "quest needs-fix is not supported yet".into(),
                ));
                continue;
            }
            self.effects
                .insert_one(doc! { "messageId": &delivery.message_id, "userId": &event.user_id })
                .session(&mut *session)
                .await?;
            let id = delivery.message_id.clone();
            messaging::consumer::on_commit(move || {
                bump(&COMMITTED, &id);
            });
            if event.quest_id.as_deref() == Some("fail-once")
                && bump(&FAILED_ONCE, &delivery.message_id) == 1
            {
                return Err(HandlerError::Retryable("failing once on purpose".into()));
            }
            outcomes.push(Outcome::Done);
        }
        Ok(outcomes)
    }
}
