//! A process that runs the consumer runner with the tests' [`e2e_tests::effects::Effects`]
//! handler, so tests can crash it between two steps and start it again.
//! `consumer_harness <database> <topic> <group>`.
//!
//! With `REWARDS_FAILPOINT=consumer-after-commit` it aborts right after its first batch's
//! transaction commits, before the batch's offset is stored: the handler registers the abort
//! with `messaging::consumer::on_commit`. The fault injection lives here, in the test crate;
//! the services' consumer runner has none.

use e2e_tests::effects::Effects;
use messaging::consumer::{
    ConsumerConfig, ConsumerRunner, Delivery, Handler, HandlerError, Outcome,
};
use messaging::dlq::DeadLetters;
use mongo_kit::Mongo;
use mongo_kit::mongodb::ClientSession;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The crash point this harness knows.
const AFTER_COMMIT: &str = "consumer-after-commit";

/// [`Effects`], aborting the process once a batch commits when `crash` is set.
struct Crashing {
    effects: Effects,
    crash: bool,
}

impl Handler for Crashing {
    type Message = <Effects as Handler>::Message;

    async fn handle(
        &self,
        session: &mut ClientSession,
        batch: &[Delivery<Self::Message>],
    ) -> Result<Vec<Outcome>, HandlerError> {
        let outcomes = self.effects.handle(session, batch).await?;
        if self.crash {
            messaging::consumer::on_commit(|| {
                eprintln!("failpoint {AFTER_COMMIT}: aborting");
                std::process::abort();
            });
        }
        Ok(outcomes)
    }
}

#[tokio::main]
async fn main() {
    telemetry::init_test_logging();
    let mut args = std::env::args().skip(1);
    let (database, topic, group) = (
        args.next().expect("database"),
        args.next().expect("topic"),
        args.next().expect("group"),
    );
    let crash = match std::env::var("REWARDS_FAILPOINT") {
        Ok(point) if point == AFTER_COMMIT => true,
        Ok(point) => panic!("unknown failpoint {point}; this harness knows {AFTER_COMMIT}"),
        Err(_) => false,
    };
    let mut mongo_config = test_support::mongo("unused");
    mongo_config.database = database;
    let mongo = Mongo::connect(&mongo_config, "consumer-harness")
        .await
        .unwrap();
    let kafka = test_support::kafka();
    let registry = Arc::new(messaging::SchemaRegistry::new(&test_support::registry()).unwrap());
    let producer = messaging::kafka::producer(&kafka).unwrap();
    let letters = DeadLetters::new(
        mongo.db(),
        producer,
        registry.clone(),
        audit::Audit::new(mongo.db(), "test"),
    );
    let handler = Crashing {
        effects: Effects::new(mongo.db()),
        crash,
    };
    ConsumerRunner::new(
        group,
        &[topic.as_str()],
        kafka,
        ConsumerConfig::default(),
        handler,
        registry,
        mongo,
        letters,
    )
    .run(CancellationToken::new())
    .await
    .unwrap();
}
