//! A process that runs nothing but an outbox relay over one database, so that tests can kill
//! it with SIGKILL mid-stream. `relay_harness <database>`; infrastructure from the
//! `REWARDS_TEST_*` variables.

use messaging::outbox::{Relay, RelayConfig};
use mongo_kit::Mongo;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    telemetry::init_test_logging();
    let database = std::env::args()
        .nth(1)
        .expect("usage: relay_harness <database>");
    let mut mongo_config = test_support::mongo("unused");
    mongo_config.database = database;
    let mongo = Mongo::connect(&mongo_config, "relay-harness")
        .await
        .unwrap();
    let producer = messaging::kafka::producer(&test_support::kafka()).unwrap();
    let config = RelayConfig {
        batch_size: 50,
        poll_interval_ms: 200,
        lease_ms: 2_000,
        ..RelayConfig::default()
    };
    Relay::ensure_indexes(mongo.db(), &config).await.unwrap();
    Relay::new(mongo.db(), producer, config, "relay-harness")
        .run(CancellationToken::new())
        .await;
}
