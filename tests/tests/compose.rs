//! docker-compose.yml cannot run on machines without a Docker engine, so this keeps it honest:
//! it must describe every service the catalog has, on the catalog's ports, with every
//! variable the code reads to find its dependencies, on stock infrastructure images.

use serde_yaml::Value;
use service_config::catalog::{self, Needs, SERVICES};
use std::path::Path;

fn workspace_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compose() -> Value {
    serde_yaml::from_str(&workspace_file("docker-compose.yml")).unwrap()
}

fn str_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

#[test]
fn infrastructure_runs_on_stock_images() {
    let compose = compose();
    let services = &compose["services"];
    let image = |name: &str| str_of(&services[name]["image"]);
    assert!(image("mongo").starts_with("mongo:"));
    assert!(image("kafka").starts_with("apache/kafka:"));
    assert!(image("schema-registry").starts_with("confluentinc/cp-schema-registry:"));

    let mongo_command: Vec<String> = services["mongo"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    assert!(
        mongo_command.contains(&"--replSet".to_owned()),
        "transactions need a replica set"
    );
    let kafka = &services["kafka"]["environment"];
    assert_eq!(
        str_of(&kafka["KAFKA_PROCESS_ROLES"]),
        "broker,controller",
        "KRaft, one node"
    );
    assert_eq!(
        str_of(
            &services["schema-registry"]["environment"]["SCHEMA_REGISTRY_SCHEMA_COMPATIBILITY_LEVEL"]
        ),
        "backward"
    );
    for (name, port) in [
        ("mongo", catalog::MONGO_PORT),
        ("kafka", catalog::KAFKA_PORT),
        ("schema-registry", catalog::REGISTRY_PORT),
    ] {
        assert_port_published(&services[name], port, name);
    }
}

#[test]
fn every_topic_is_created_with_its_partitions() {
    let compose = compose();
    let init = str_of(&compose["services"]["kafka-init"]["command"][0]);
    // Words like `game.user-activity:6`: a dotted topic name and its partition count.
    let mut created: Vec<String> = init
        .split_whitespace()
        .map(|word| word.trim_end_matches(';'))
        .filter(|word| {
            word.split_once(':').is_some_and(|(name, partitions)| {
                name.contains('.') && partitions.bytes().all(|b| b.is_ascii_digit())
            })
        })
        .map(str::to_owned)
        .collect();
    let mut expected: Vec<String> = messaging::topics::all()
        .iter()
        .map(|t| format!("{}:{}", t.name, t.partitions))
        .collect();
    created.sort();
    expected.sort();
    assert_eq!(created, expected);
}

#[test]
fn every_service_is_built_from_the_one_dockerfile_with_its_port_and_env() {
    let compose = compose();
    let dockerfile = workspace_file("Dockerfile");
    assert!(dockerfile.contains("ARG SERVICE"));
    for spec in SERVICES {
        let service = &compose["services"][spec.name];
        assert!(!service.is_null(), "{} is missing", spec.name);
        assert_eq!(
            str_of(&service["build"]["dockerfile"]),
            "Dockerfile",
            "{}",
            spec.name
        );
        assert_eq!(str_of(&service["build"]["args"]["SERVICE"]), spec.name);
        if spec.name == catalog::GATEWAY.name {
            assert_port_published(service, spec.default_port, spec.name);
        } else {
            // Only the gateway is public; the others are reachable on the compose network.
            assert!(service["ports"].is_null(), "{} publishes ports", spec.name);
            let exposed: Vec<String> = service["expose"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{} exposes no port", spec.name))
                .iter()
                .map(str_of)
                .collect();
            assert_eq!(exposed, [spec.default_port.to_string()], "{}", spec.name);
        }

        let env = &service["environment"];
        let var = |name: &str| {
            let value = &env[name];
            assert!(!value.is_null(), "{} lacks {name}", spec.name);
            str_of(value)
        };
        assert_eq!(
            var("REWARDS_HTTP__HOST"),
            "0.0.0.0",
            "{} must listen beyond loopback",
            spec.name
        );
        assert_eq!(var("REWARDS_HTTP__PORT"), spec.default_port.to_string());
        for need in spec.needs {
            let value = var(need.env_var());
            let expected = match need {
                Needs::Mongo => "mongo:",
                Needs::Kafka => "kafka:",
                Needs::Registry => "schema-registry:",
                // Secrets come from the environment of `docker compose`, never from this file.
                Needs::IdentitySecret | Needs::SigningKey => "${",
            };
            assert!(
                value.contains(expected),
                "{}: {} = {value}",
                spec.name,
                need.env_var()
            );
        }
        for (upstream, env_var) in spec.upstreams {
            let port = SERVICES
                .iter()
                .find(|s| s.name == *upstream)
                .unwrap()
                .default_port;
            assert_eq!(
                var(env_var),
                format!("http://{upstream}:{port}"),
                "{}",
                spec.name
            );
        }
    }
}

fn assert_port_published(service: &Value, port: u16, name: &str) {
    let published: Vec<String> = service["ports"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{name} publishes no ports"))
        .iter()
        .map(str_of)
        .collect();
    assert!(
        published.contains(&format!("{port}:{port}")),
        "{name} should publish {port}: {published:?}"
    );
}
