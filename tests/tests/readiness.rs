//! `/readyz` really asks each dependency: with one unreachable, the service is alive but not
//! ready, and says which dependency is down.

use e2e_tests::{ServiceProcess, closed_port};
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn readyz(service: &ServiceProcess) -> (u16, Value) {
    let response = client().get(service.url("/readyz")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Not ready, blaming `down`, while the dependencies in `up` are reported fine.
async fn assert_unready_because(service: &ServiceProcess, down: &str, up: &[&str]) {
    let (status, body) = readyz(service).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "not_ready");
    assert_eq!(body["checks"][down]["status"], "down", "{body}");
    for name in up {
        assert_eq!(body["checks"][name]["status"], "up", "{name}: {body}");
    }
    let health = client().get(service.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "alive all the same");
}

#[tokio::test]
async fn unreachable_mongodb_makes_a_service_unready() {
    let uri = format!(
        "mongodb://127.0.0.1:{}/?directConnection=true",
        closed_port()
    );
    let service = ServiceProcess::start("auth", &[("REWARDS_MONGO__URI", uri)]);
    assert_unready_because(&service, "mongodb", &["kafka", "schema-registry"]).await;
}

#[tokio::test]
async fn unreachable_kafka_makes_a_service_unready() {
    let brokers = format!("127.0.0.1:{}", closed_port());
    let service = ServiceProcess::start("event", &[("REWARDS_KAFKA__BROKERS", brokers)]);
    assert_unready_because(&service, "kafka", &["mongodb", "schema-registry"]).await;
}

#[tokio::test]
async fn unreachable_registry_makes_a_service_unready() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let service = ServiceProcess::start("game-sim", &[("REWARDS_REGISTRY__URL", url)]);
    assert_unready_because(&service, "schema-registry", &["kafka"]).await;
}

#[tokio::test]
async fn unreachable_upstream_makes_the_gateway_unready() {
    let overrides = [
        (
            "REWARDS_UPSTREAMS__AUTH",
            format!("http://127.0.0.1:{}", closed_port()),
        ),
        (
            "REWARDS_UPSTREAMS__EVENT",
            test_support::service_url("event"),
        ),
        (
            "REWARDS_UPSTREAMS__REWARD_FULFILLMENT",
            test_support::service_url("reward-fulfillment"),
        ),
    ];
    let service = ServiceProcess::start("gateway", &overrides);
    assert_unready_because(&service, "auth", &["event", "reward-fulfillment"]).await;
}
