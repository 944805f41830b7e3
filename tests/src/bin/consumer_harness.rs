//! A process that runs the consumer runner with the tests' [`e2e_tests::effects::Effects`]
//! handler, so tests can crash it at a failpoint (`REWARDS_FAILPOINT`) and start it again.
//! `consumer_harness <database> <topic> <group>`.

use e2e_tests::effects::Effects;
use messaging::consumer::{ConsumerConfig, ConsumerRunner};
use messaging::dlq::DeadLetters;
use mongo_kit::Mongo;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    telemetry::init_test_logging();
    let mut args = std::env::args().skip(1);
    let (database, topic, group) = (
        args.next().expect("database"),
        args.next().expect("topic"),
        args.next().expect("group"),
    );
    let mut mongo_config = test_support::mongo("unused");
    mongo_config.database = database;
    let mongo = Mongo::connect(&mongo_config, "consumer-harness")
        .await
        .unwrap();
    let kafka = test_support::kafka();
    let registry = Arc::new(messaging::SchemaRegistry::new(&test_support::registry()).unwrap());
    let producer = messaging::kafka::producer(&kafka).unwrap();
    let letters = DeadLetters::new(mongo.db(), producer, registry.clone());
    ConsumerRunner::new(
        group,
        &[topic.as_str()],
        kafka,
        ConsumerConfig::default(),
        Effects::new(mongo.db()),
        registry,
        mongo,
        letters,
    )
    .run(CancellationToken::new())
    .await
    .unwrap();
}
