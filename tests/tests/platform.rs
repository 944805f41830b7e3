//! The platform as `./dev test` starts it: every service a real process, on real
//! infrastructure.

use serde_json::Value;
use service_config::catalog::{Needs, SERVICES, ServiceSpec};
use test_support::service_url;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The readiness check names a service reports, derived from what the catalog says it needs.
fn expected_checks(spec: &ServiceSpec) -> Vec<&'static str> {
    let mut checks: Vec<&str> = spec
        .needs
        .iter()
        .filter_map(|need| match need {
            Needs::Mongo => Some("mongodb"),
            Needs::Kafka => Some("kafka"),
            Needs::Registry => Some("schema-registry"),
            Needs::IdentitySecret | Needs::SigningKey => None,
        })
        .collect();
    checks.extend(spec.upstreams.iter().map(|(name, _)| *name));
    checks
}

#[tokio::test]
async fn every_service_is_alive() {
    for spec in SERVICES {
        let url = format!("{}/healthz", service_url(spec.name));
        let response = client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "up", "{url}");
    }
}

#[tokio::test]
async fn every_service_is_ready_with_each_of_its_dependencies_checked() {
    for spec in SERVICES {
        let url = format!("{}/readyz", service_url(spec.name));
        let response = client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ready", "{url}: {body}");
        let checks = body["checks"].as_object().unwrap();
        for dependency in expected_checks(&spec) {
            assert!(
                checks.contains_key(dependency),
                "{url} does not check {dependency}: {body}"
            );
        }
        for (name, check) in checks {
            assert_eq!(check["status"], "up", "{url}: {name}");
        }
    }
}

#[tokio::test]
async fn every_service_serves_prometheus_metrics_of_its_requests() {
    for spec in SERVICES {
        let base = service_url(spec.name);
        client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        let response = client()
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(
            text.lines().any(|l| l.starts_with("http_requests_total{")
                && l.contains(r#"route="/healthz""#)),
            "{}: no request counter for /healthz in:\n{text}",
            spec.name
        );
    }
}

#[tokio::test]
async fn request_ids_are_kept_when_sent_and_generated_otherwise() {
    let base = service_url("auth");
    let kept = client()
        .get(format!("{base}/healthz"))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "req-123");

    let generated = client()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
}

#[tokio::test]
async fn unknown_routes_answer_problem_json_with_a_stable_code() {
    for spec in SERVICES {
        let url = format!("{}/no/such/route", service_url(spec.name));
        let response = client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 404, "{url}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{url}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
        assert_eq!(body["status"], 404);
    }
}
