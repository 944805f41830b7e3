//! docker-compose.yml cannot run on machines without a Docker engine, so this keeps it honest:
//! it must describe every service the catalog has, on the catalog's ports, with every
//! variable the code reads to find its dependencies, on stock infrastructure images.

use serde_yaml::Value;
use service_config::catalog::{self, Needs, SERVICES};
use std::path::Path;

/// What `./dev` runs mongod with too (`xtask/src/component.rs`).
const TRANSACTION_LIFETIME: &str = "transactionLifetimeLimitSeconds=10";

fn workspace_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compose() -> Value {
    serde_yaml::from_str(&workspace_file("docker-compose.yml")).unwrap()
}

/// A sequence of scalars as strings; empty when `value` is not a sequence.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| items.iter().map(str_of).collect())
        .unwrap_or_default()
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

    let mongo_command = strings(&services["mongo"]["command"]);
    assert!(
        mongo_command.contains(&"--replSet".to_owned()),
        "transactions need a replica set"
    );
    assert!(
        mongo_command.contains(&TRANSACTION_LIFETIME.to_owned()),
        "a killed service's transaction must not hold its documents for a minute"
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
            let exposed = strings(&service["expose"]);
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
    let published = strings(&service["ports"]);
    assert!(
        published.contains(&format!("{port}:{port}")),
        "{name} should publish {port}: {published:?}"
    );
}

/// The cluster profile's services, merge keys applied, by name.
fn cluster_services() -> serde_yaml::Mapping {
    let mut compose = compose();
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().unwrap().clone();
    for (name, service) in &services {
        let name = str_of(name);
        let in_profile = strings(&service["profiles"]).contains(&"cluster".to_owned());
        assert_eq!(
            name.starts_with("cluster-"),
            in_profile,
            "{name}: the cluster's services, and only they, are in the cluster profile"
        );
    }
    services
        .into_iter()
        .filter(|(name, _)| str_of(name).starts_with("cluster-"))
        .collect()
}

fn env(service: &Value, var: &str) -> String {
    let value = &service["environment"][var];
    assert!(!value.is_null(), "missing {var}");
    str_of(value)
}

/// `cluster-<name>-<n>` for each instance, or `cluster-<name>` when there is one.
fn instance_names(name: &str, instances: usize) -> Vec<String> {
    match instances {
        1 => vec![format!("cluster-{name}")],
        n => (1..=n).map(|i| format!("cluster-{name}-{i}")).collect(),
    }
}

#[test]
fn the_cluster_profile_runs_three_mongod_in_one_replica_set() {
    let services = cluster_services();
    let hosts: Vec<String> = (1..=3)
        .map(|i| format!("cluster-mongo-{i}:27017"))
        .collect();
    for name in instance_names("mongo", 3) {
        let mongo = &services[name.as_str()];
        assert!(str_of(&mongo["image"]).starts_with("mongo:"), "{name}");
        let command = strings(&mongo["command"]);
        assert!(
            command.windows(2).any(|w| w == ["--replSet", "rs0"]),
            "{name}"
        );
        assert!(command.contains(&TRANSACTION_LIFETIME.to_owned()), "{name}");
    }
    let script = strings(&services["cluster-mongo-init"]["entrypoint"]).join(" ");
    for host in &hosts {
        assert!(
            script.contains(host),
            "the replica set names {host}: {script}"
        );
    }
    for spec in SERVICES.iter().filter(|s| s.needs.contains(&Needs::Mongo)) {
        for name in instance_names(spec.name, spec.cluster_instances) {
            let uri = env(&services[name.as_str()], Needs::Mongo.env_var());
            assert_eq!(
                uri,
                format!("mongodb://{}/?replicaSet=rs0", hosts.join(",")),
                "{name}"
            );
        }
    }
}

#[test]
fn the_cluster_profile_runs_three_kafka_nodes_replicating_every_topic() {
    let services = cluster_services();
    let nodes = instance_names("kafka", 3);
    let voters: Vec<String> = (1..=3)
        .map(|i| format!("{i}@cluster-kafka-{i}:9093"))
        .collect();
    let mut ids = Vec::new();
    for (i, name) in nodes.iter().enumerate() {
        let node = &services[name.as_str()];
        assert!(
            str_of(&node["image"]).starts_with("apache/kafka:"),
            "{name}"
        );
        assert_eq!(env(node, "KAFKA_NODE_ID"), (i + 1).to_string(), "{name}");
        assert_eq!(env(node, "KAFKA_PROCESS_ROLES"), "broker,controller");
        assert_eq!(
            env(node, "KAFKA_CONTROLLER_QUORUM_VOTERS"),
            voters.join(",")
        );
        assert!(env(node, "KAFKA_ADVERTISED_LISTENERS").contains(&format!("{name}:19092")));
        for (var, value) in [
            ("KAFKA_DEFAULT_REPLICATION_FACTOR", "3"),
            ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
            ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3"),
            ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "3"),
            ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "2"),
        ] {
            assert_eq!(env(node, var), value, "{name}: {var}");
        }
        ids.push(env(node, "CLUSTER_ID"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one cluster id for the three nodes");

    let init = str_of(&services["cluster-kafka-init"]["command"][0]);
    assert!(init.contains("--replication-factor 3"), "{init}");
    assert!(init.contains("min.insync.replicas=2"), "{init}");
    for topic in messaging::topics::all() {
        assert!(
            init.contains(&format!("{}:{}", topic.name, topic.partitions)),
            "{}",
            topic.name
        );
    }
    let brokers: Vec<String> = nodes.iter().map(|n| format!("{n}:19092")).collect();
    for spec in SERVICES.iter().filter(|s| s.needs.contains(&Needs::Kafka)) {
        for name in instance_names(spec.name, spec.cluster_instances) {
            let service = &services[name.as_str()];
            assert_eq!(
                env(service, Needs::Kafka.env_var()),
                brokers.join(","),
                "{name}"
            );
            if spec.needs.contains(&Needs::Mongo) {
                // The services create missing topics as replicated as the init job does.
                assert_eq!(
                    env(service, "REWARDS_KAFKA__TOPIC_REPLICATION"),
                    "3",
                    "{name}"
                );
                assert_eq!(
                    env(service, "REWARDS_KAFKA__TOPIC_MIN_INSYNC_REPLICAS"),
                    "2",
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn the_cluster_profile_runs_each_service_as_often_as_the_catalog_says_behind_one_gateway() {
    let services = cluster_services();
    for spec in SERVICES {
        for name in instance_names(spec.name, spec.cluster_instances) {
            let service = &services[name.as_str()];
            assert!(!service.is_null(), "{name} is missing");
            assert_eq!(
                str_of(&service["build"]["args"]["SERVICE"]),
                spec.name,
                "{name}"
            );
            assert_eq!(
                env(service, "REWARDS_HTTP__PORT"),
                spec.default_port.to_string()
            );
            assert_eq!(env(service, "REWARDS_HTTP__HOST"), "0.0.0.0");
            for need in spec.needs {
                let value = env(service, need.env_var());
                match need {
                    Needs::Registry => assert_eq!(value, "http://cluster-schema-registry:8081"),
                    Needs::IdentitySecret | Needs::SigningKey => {
                        assert!(value.starts_with("${"), "{name}: a secret in the file")
                    }
                    Needs::Mongo | Needs::Kafka => {}
                }
            }
            if spec.name == catalog::GATEWAY.name {
                assert_port_published(service, spec.default_port, &name);
            } else {
                assert!(service["ports"].is_null(), "{name} publishes ports");
            }
        }
        for (upstream, env_var) in spec.upstreams {
            let upstream_spec = SERVICES.iter().find(|s| s.name == *upstream).unwrap();
            let urls: Vec<String> = instance_names(upstream, upstream_spec.cluster_instances)
                .iter()
                .map(|n| format!("http://{n}:{}", upstream_spec.default_port))
                .collect();
            let gateway = &services[instance_names(spec.name, 1)[0].as_str()];
            assert_eq!(env(gateway, env_var), urls.join(","), "{env_var}");
        }
    }
}
