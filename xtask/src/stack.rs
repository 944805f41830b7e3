//! The platform as a set of supervised processes: infrastructure first (MongoDB, Kafka, the
//! schema registry), then the services, each started, waited on until healthy, probed and
//! stopped the same way.
//!
//! An instance has one of two shapes ([`Topology`]), chosen when it is first started:
//! `single` runs one of everything; `cluster` runs a three-member MongoDB replica set, three
//! Kafka nodes (each broker and KRaft controller), two instances of each stateful service
//! and a gateway spreading requests over them. The registry and game-sim stay single.

use crate::component::Component;
use crate::install::Tools;
use crate::layout::{Home, InstanceDirs};
use anyhow::{Context, bail};
use futures::future::try_join_all;
use messaging::registry::Compatibility;
use messaging::{SchemaRegistry, kafka, topics};
use serde::{Deserialize, Serialize};
use service_config::catalog::{self, Needs, ServiceSpec};
use service_config::{KafkaConfig, RegistryConfig};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use supervise::manifest::{self, Manifest};
use supervise::process;

pub const REPLICA_SET: &str = "rs0";

/// The shape of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// One mongod, one Kafka node, one instance of each service.
    #[default]
    Single,
    /// Three mongod (one replica set), three Kafka nodes, two instances of each stateful
    /// service.
    Cluster,
}

impl Topology {
    pub fn of(cluster: bool) -> Self {
        if cluster {
            Topology::Cluster
        } else {
            Topology::Single
        }
    }

    /// Members of the replica set, and nodes of the Kafka cluster.
    pub fn replicas(self) -> usize {
        match self {
            Topology::Single => 1,
            Topology::Cluster => 3,
        }
    }

    pub fn instances(self, spec: &ServiceSpec) -> usize {
        match self {
            Topology::Single => 1,
            Topology::Cluster => spec.cluster_instances,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Topology::Single => "single",
            Topology::Cluster => "cluster",
        }
    }
}

/// A Kafka node's listeners.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct KafkaPorts {
    pub broker: u16,
    pub controller: u16,
}

/// Every port an instance uses, and its shape; saved next to it so `status` and `down` find
/// them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ports {
    #[serde(default)]
    pub topology: Topology,
    /// One per replica-set member.
    pub mongo: Vec<u16>,
    /// One per Kafka node.
    pub kafka: Vec<KafkaPorts>,
    pub registry: u16,
    pub registry_management: u16,
    /// Each service's instances' ports.
    pub services: BTreeMap<String, Vec<u16>>,
}

impl Ports {
    /// The design's well-known ports: what `./dev up` uses. A cluster's further members
    /// take the next ports (mongod 27018, 27019; Kafka 9094/9095, 9096/9097), and second
    /// service instances their port plus 100 (auth 3101, event 3102, ...).
    pub fn standard(topology: Topology) -> Self {
        let replicas = topology.replicas() as u16;
        Self {
            topology,
            mongo: (0..replicas).map(|i| catalog::MONGO_PORT + i).collect(),
            kafka: (0..replicas)
                .map(|i| KafkaPorts {
                    broker: catalog::KAFKA_PORT + 2 * i,
                    controller: catalog::KAFKA_CONTROLLER_PORT + 2 * i,
                })
                .collect(),
            registry: catalog::REGISTRY_PORT,
            registry_management: catalog::REGISTRY_MANAGEMENT_PORT,
            services: catalog::SERVICES
                .iter()
                .map(|s| {
                    let ports = (0..topology.instances(s) as u16)
                        .map(|i| s.default_port + 100 * i)
                        .collect();
                    (s.name.to_owned(), ports)
                })
                .collect(),
        }
    }

    /// Free loopback ports, so a test run never collides with `./dev up` or another run.
    pub fn free(topology: Topology) -> anyhow::Result<Self> {
        let replicas = topology.replicas();
        let services: usize = catalog::SERVICES
            .iter()
            .map(|s| topology.instances(s))
            .sum();
        // Hold every listener until all are picked so no port is handed out twice.
        let listeners = (0..3 * replicas + 2 + services)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let mut next = || ports.next().expect("one listener per port");
        Ok(Self {
            topology,
            mongo: (0..replicas).map(|_| next()).collect(),
            kafka: (0..replicas)
                .map(|_| KafkaPorts {
                    broker: next(),
                    controller: next(),
                })
                .collect(),
            registry: next(),
            registry_management: next(),
            services: catalog::SERVICES
                .iter()
                .map(|s| {
                    let ports = (0..topology.instances(s)).map(|_| next()).collect();
                    (s.name.to_owned(), ports)
                })
                .collect(),
        })
    }

    /// The ports saved with an instance: this layout, or the one before clusters (one port
    /// per component), which an instance made by an older `./dev` still has.
    fn load(bytes: &[u8]) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct Before {
            mongo: u16,
            kafka: u16,
            kafka_controller: u16,
            registry: u16,
            registry_management: u16,
            services: BTreeMap<String, u16>,
        }
        if let Ok(ports) = serde_json::from_slice(bytes) {
            return Ok(ports);
        }
        let before: Before = serde_json::from_slice(bytes).context("reading ports.json")?;
        Ok(Self {
            topology: Topology::Single,
            mongo: vec![before.mongo],
            kafka: vec![KafkaPorts {
                broker: before.kafka,
                controller: before.kafka_controller,
            }],
            registry: before.registry,
            registry_management: before.registry_management,
            services: before
                .services
                .into_iter()
                .map(|(name, port)| (name, vec![port]))
                .collect(),
        })
    }
}

/// One copy of the platform: directories, ports and the tools it runs.
pub struct Instance {
    pub dirs: InstanceDirs,
    pub ports: Ports,
    pub secrets: Secrets,
    pub kind: InstanceKind,
    /// Services run from release builds (`./dev up --release`).
    pub release: bool,
    pub home: Home,
    pub tools: Tools,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceKind {
    /// `./dev up`: the configuration a developer would run.
    Dev,
    /// `./dev test`: fresh data; limits that would get in the tests' way are raised.
    Test,
}

/// The instance's secrets, made on first use and kept (mode 0600) next to its data, so that
/// tokens and sessions survive a restart as they would in production.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Secrets {
    pub identity_secret: String,
    pub jwt_private_key_pem: String,
    pub admin_email: String,
    pub admin_password: String,
}

impl Secrets {
    fn load_or_create(path: &std::path::Path) -> anyhow::Result<Self> {
        if let Ok(saved) = std::fs::read(path) {
            return serde_json::from_slice(&saved).context("reading secrets.json");
        }
        let secrets = Self {
            identity_secret: auth_claims::generate_identity_secret(),
            jwt_private_key_pem: auth_claims::generate_ed25519_pem(),
            admin_email: "admin@rewards.local".into(),
            admin_password: auth_claims::generate_identity_secret()[..24].to_owned(),
        };
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(path)?
            .write_all(&serde_json::to_vec_pretty(&secrets)?)?;
        Ok(secrets)
    }
}

impl Instance {
    /// Opens the instance at `dirs` with the ports (and shape) it was started with, or with
    /// `ports` if it was never started.
    pub fn open(
        home: &Home,
        tools: Tools,
        dirs: InstanceDirs,
        ports: Ports,
        kind: InstanceKind,
    ) -> anyhow::Result<Self> {
        dirs.create()?;
        let ports = match std::fs::read(dirs.ports_file()) {
            Ok(saved) => Ports::load(&saved)?,
            Err(_) => ports,
        };
        let secrets = Secrets::load_or_create(&dirs.root.join("secrets.json"))?;
        Ok(Self {
            dirs,
            ports,
            secrets,
            kind,
            release: false,
            home: home.clone(),
            tools,
        })
    }

    pub fn topology(&self) -> Topology {
        self.ports.topology
    }

    /// The binary a service runs from: debug builds, or release ones for measurements.
    pub fn service_binary(&self, name: &str) -> std::path::PathBuf {
        let profile = if self.release { "release" } else { "debug" };
        self.home.target_dir().join(profile).join(name)
    }

    /// `127.0.0.1:<port>` of each replica-set member.
    pub fn mongo_hosts(&self) -> Vec<String> {
        self.ports
            .mongo
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    pub fn mongo_uri(&self) -> String {
        format!(
            "mongodb://{}/?replicaSet={REPLICA_SET}",
            self.mongo_hosts().join(",")
        )
    }

    pub fn kafka_brokers(&self) -> String {
        self.ports
            .kafka
            .iter()
            .map(|k| format!("127.0.0.1:{}", k.broker))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn registry_url(&self) -> String {
        format!("http://127.0.0.1:{}/apis/ccompat/v7", self.ports.registry)
    }

    /// The base URL of a service's first instance.
    pub fn service_url(&self, name: &str) -> String {
        self.service_urls(name).swap_remove(0)
    }

    /// The base URL of each of a service's instances.
    pub fn service_urls(&self, name: &str) -> Vec<String> {
        self.ports.services[name]
            .iter()
            .map(|port| format!("http://127.0.0.1:{port}"))
            .collect()
    }

    /// Kafka as the tool uses it: topics replicated to three nodes where there are three,
    /// with two of them in sync for a write to count.
    pub fn kafka_config(&self) -> KafkaConfig {
        let nodes = self.ports.kafka.len() as i32;
        KafkaConfig {
            brokers: self.kafka_brokers(),
            client_id: "dev-tool".into(),
            topic_replication: nodes.min(3),
            topic_min_insync_replicas: if nodes >= 3 { 2 } else { 1 },
            ..KafkaConfig::default()
        }
    }

    /// Every component, in start order.
    pub fn components(&self) -> Vec<Component> {
        let replicas = self.topology().replicas();
        let mut all: Vec<Component> = (0..replicas).map(Component::Mongo).collect();
        all.extend((0..replicas).map(Component::Kafka));
        all.push(Component::Registry);
        for spec in catalog::SERVICES {
            all.extend((0..self.topology().instances(&spec)).map(|i| Component::Service(spec, i)));
        }
        all
    }

    /// Starts what is not running yet and waits until everything is healthy. Infrastructure
    /// comes up concurrently, then the services concurrently.
    pub async fn start(&self) -> anyhow::Result<()> {
        std::fs::write(
            self.dirs.ports_file(),
            serde_json::to_vec_pretty(&self.ports)?,
        )?;
        self.manifest().save(&self.dirs.root)?;
        let (infra, services): (Vec<_>, Vec<_>) = self
            .components()
            .into_iter()
            .partition(|c| !matches!(c, Component::Service(..)));
        self.start_group(&infra).await?;
        self.prepare_infrastructure().await?;
        self.start_group(&services).await
    }

    async fn start_group(&self, components: &[Component]) -> anyhow::Result<()> {
        for component in components {
            component.start_if_stopped(self)?;
        }
        try_join_all(components.iter().map(|c| c.wait_ready(self))).await?;
        Ok(())
    }

    /// What the platform expects before services start: a replica set with a primary, its
    /// topics, and BACKWARD as the registry's default compatibility (Apicurio's own default
    /// is NONE).
    async fn prepare_infrastructure(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        mongo_kit::initiate_replica_set(
            &self.mongo_hosts(),
            REPLICA_SET,
            self.election_timeout(),
            Duration::from_secs(90),
        )
        .await
        .context("initiating the MongoDB replica set")?;
        if self.topology() == Topology::Cluster {
            println!(
                "{:<20} primary elected after {:.1?}",
                "replica set",
                started.elapsed()
            );
        }
        kafka::ensure_topics(&self.kafka_config(), &topics::all())
            .await
            .context("creating topics")?;
        let registry = SchemaRegistry::new(&RegistryConfig {
            url: self.registry_url(),
        })?;
        registry
            .set_compatibility(None, Compatibility::Backward)
            .await
            .context("setting the registry's default compatibility")?;
        Ok(())
    }

    /// How long a cluster's secondaries wait for a lost primary before electing another:
    /// 5 s instead of MongoDB's 10 s. On a loaded two-core machine a shorter timeout led to
    /// elections nobody asked for (heartbeats late behind the load), and a longer one only
    /// makes every primary failure a longer outage.
    fn election_timeout(&self) -> Option<Duration> {
        (self.topology() == Topology::Cluster).then_some(Duration::from_secs(5))
    }

    /// What runs where, for programs that act on the instance from outside.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            topology: self.topology().name().to_owned(),
            replica_set: REPLICA_SET.to_owned(),
            members: self
                .components()
                .iter()
                .map(|c| manifest::Member {
                    name: c.name(),
                    kind: c.kind(),
                    port: c.port(self),
                    node_id: c.kafka_node_id(),
                    pid_file: self.dirs.pid_file(&c.name()),
                    marker: c.marker(self),
                    log: self.dirs.log(&c.name()),
                })
                .collect(),
        }
    }

    /// Stops every component this instance started: services first (the gateway before
    /// what it calls), then the registry, Kafka and MongoDB. The members of a replicated
    /// group stop together: one by one, the last Kafka nodes would wait for a controller
    /// quorum that is gone, and each mongod that is primary for a moment for a secondary to
    /// catch up.
    pub fn stop(&self) {
        let running: Vec<(Component, u32)> = self
            .components()
            .into_iter()
            .rev()
            .filter_map(|c| Some((c, c.running_pid(self)?)))
            .collect();
        if running.is_empty() {
            println!("nothing of {} is running", self.dirs.root.display());
        }
        let group = |c: &Component| match c {
            Component::Kafka(_) => 1,
            Component::Mongo(_) => 2,
            _ => 0,
        };
        for one in running.iter().filter(|(c, _)| group(c) == 0) {
            Self::stop_all(std::slice::from_ref(one));
        }
        for wave in [1, 2] {
            let members: Vec<(Component, u32)> = running
                .iter()
                .filter(|(c, _)| group(c) == wave)
                .copied()
                .collect();
            Self::stop_all(&members);
        }
    }

    /// SIGTERM to each at once, then waits for each (SIGKILL after its grace period).
    fn stop_all(components: &[(Component, u32)]) {
        std::thread::scope(|scope| {
            for &(component, pid) in components {
                scope.spawn(move || {
                    let started = Instant::now();
                    let clean = process::stop(pid, component.stop_grace());
                    println!(
                        "stopped {:<20} pid {pid:<7} in {:.1?}{}",
                        component.name(),
                        started.elapsed(),
                        if clean {
                            ""
                        } else {
                            " (killed after the grace period)"
                        }
                    );
                });
            }
        });
    }

    /// One line per component: pid, port, health, memory, and its role in its cluster (the
    /// replica-set member's state, the partitions a Kafka node leads). Returns whether all
    /// are healthy.
    pub async fn status(&self) -> (String, bool) {
        let roles = self.roles().await;
        let mut out = format!(
            "{:<20} {:>7} {:>6}  {:<9} {:>9}  {:<24} {}\n",
            "COMPONENT", "PID", "PORT", "HEALTH", "RSS", "ROLE", "ENDPOINT"
        );
        let mut all_healthy = true;
        let mut total_kib = 0;
        for component in self.components() {
            let pid = component.running_pid(self);
            let health = match pid {
                None => "stopped",
                Some(_) => match component.probe(self).await {
                    Ok(()) => "healthy",
                    Err(_) => "unhealthy",
                },
            };
            all_healthy &= health == "healthy";
            let kib = pid.and_then(process::rss_kib);
            total_kib += kib.unwrap_or(0);
            let rss = kib
                .map(|kib| format!("{} MiB", kib / 1024))
                .unwrap_or_default();
            let role = roles.get(&component.name()).map_or("", String::as_str);
            let _ = writeln!(
                out,
                "{:<20} {:>7} {:>6}  {:<9} {:>9}  {:<24} {}",
                component.name(),
                pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                component.port(self),
                health,
                rss,
                role,
                component.endpoint(self),
            );
        }
        let _ = writeln!(
            out,
            "{} topology, {} MiB resident in all",
            self.topology().name(),
            total_kib / 1024
        );
        (out, all_healthy)
    }

    /// Each replica-set member's state and each Kafka node's partition leaderships, by
    /// component name; nothing for what cannot be asked right now.
    async fn roles(&self) -> HashMap<String, String> {
        let mut roles = HashMap::new();
        let mongo: Vec<Component> = self
            .components()
            .into_iter()
            .filter(|c| matches!(c, Component::Mongo(_)))
            .collect();
        for host in self.mongo_hosts() {
            let Ok(Ok(members)) = tokio::time::timeout(
                Duration::from_secs(2),
                mongo_kit::replica_set_members(&host),
            )
            .await
            else {
                continue;
            };
            for (member, state) in members {
                if let Some(c) = mongo.iter().find(|c| c.endpoint(self) == member) {
                    roles.insert(c.name(), state.to_lowercase());
                }
            }
            break;
        }
        if let Ok(leaders) = self.partition_leaders().await {
            for component in self.components() {
                if let Some(node) = component.kafka_node_id() {
                    let led = leaders.get(&node).copied().unwrap_or(0);
                    roles.insert(component.name(), format!("leads {led} partitions"));
                }
            }
        }
        roles
    }

    /// How many of the platform's partitions each Kafka node leads, by node id.
    async fn partition_leaders(&self) -> anyhow::Result<HashMap<i32, usize>> {
        let producer = kafka::producer(&self.kafka_config())?;
        let mut leaders = HashMap::new();
        for topic in kafka::describe_topics(&producer, Duration::from_secs(2)).await? {
            for (leader, _, _) in topic.partitions {
                *leaders.entry(leader).or_insert(0) += 1;
            }
        }
        Ok(leaders)
    }

    /// `KEY=value` pairs pointing tests (and developers' tools) at this instance.
    pub fn test_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (test_support::MONGO_URI.to_owned(), self.mongo_uri()),
            (test_support::KAFKA_BROKERS.to_owned(), self.kafka_brokers()),
            (test_support::REGISTRY_URL.to_owned(), self.registry_url()),
            (
                test_support::CONFIG_DIR.to_owned(),
                self.dirs.config("").display().to_string(),
            ),
            (
                test_support::TOPOLOGY.to_owned(),
                self.topology().name().to_owned(),
            ),
            (
                test_support::ADMIN_EMAIL.to_owned(),
                self.secrets.admin_email.clone(),
            ),
            (
                test_support::ADMIN_PASSWORD.to_owned(),
                self.secrets.admin_password.clone(),
            ),
            (
                test_support::JWT_PRIVATE_KEY_PEM.to_owned(),
                self.secrets.jwt_private_key_pem.clone(),
            ),
            (
                test_support::IDENTITY_SECRET.to_owned(),
                self.secrets.identity_secret.clone(),
            ),
        ];
        for spec in catalog::SERVICES {
            env.push((
                format!(
                    "{}{}",
                    test_support::SERVICE_URL_PREFIX,
                    spec.name.to_uppercase().replace('-', "_")
                ),
                self.service_url(spec.name),
            ));
        }
        env
    }

    /// The config file of instance `index` of `spec`.
    pub fn write_service_config(
        &self,
        spec: &ServiceSpec,
        index: usize,
        name: &str,
    ) -> anyhow::Result<std::path::PathBuf> {
        let mut toml = format!(
            "# Written by ./dev for this instance; env vars (REWARDS_*) still override it.\n\
             [http]\nhost = \"127.0.0.1\"\nport = {}\n\n[log]\nformat = \"json\"\n",
            self.ports.services[spec.name][index]
        );
        for need in spec.needs {
            let (section, key, value) = match need {
                Needs::Mongo => ("mongo", "uri", self.mongo_uri()),
                Needs::Kafka => ("kafka", "brokers", self.kafka_brokers()),
                Needs::Registry => ("registry", "url", self.registry_url()),
                Needs::IdentitySecret => (
                    "internal",
                    "identity_secret",
                    self.secrets.identity_secret.clone(),
                ),
                Needs::SigningKey => (
                    "jwt",
                    "private_key_pem",
                    self.secrets.jwt_private_key_pem.clone(),
                ),
            };
            // Literal multi-line strings: values (a PEM key) may hold newlines, never `'''`.
            let _ = write!(toml, "\n[{section}]\n{key} = '''\n{value}'''\n");
        }
        if spec.needs.contains(&Needs::Kafka) {
            let kafka = self.kafka_config();
            let _ = write!(
                toml,
                "topic_replication = {}\ntopic_min_insync_replicas = {}\n",
                kafka.topic_replication, kafka.topic_min_insync_replicas
            );
        }
        if spec.name == catalog::AUTH.name {
            let _ = write!(
                toml,
                "\n[bootstrap_admin]\nemail = '{}'\npassword = '{}'\n",
                self.secrets.admin_email, self.secrets.admin_password
            );
        }
        if spec.name == catalog::REWARD_FULFILLMENT.name {
            // A demo item that always fails to grant, so compensation can be seen (and tested).
            toml.push_str("\n[failure]\nfailing_item_codes = [\"cursed-sword\"]\n");
        }
        if spec.name == catalog::GATEWAY.name && self.kind == InstanceKind::Test {
            // Every test signs in from 127.0.0.1; the limit itself is tested on a gateway of
            // its own.
            toml.push_str("\n[rate_limit]\nper_minute = 1000000\nburst = 100000\n");
        }
        if !spec.upstreams.is_empty() {
            toml.push_str("\n[upstreams]\n");
            for (upstream, _) in spec.upstreams {
                let urls: Vec<String> = self
                    .service_urls(upstream)
                    .iter()
                    .map(|url| format!("\"{url}\""))
                    .collect();
                let _ = writeln!(
                    toml,
                    "{} = [{}]",
                    upstream.replace('-', "_"),
                    urls.join(", ")
                );
            }
        }
        let path = self.dirs.config(&format!("{name}.toml"));
        write_private(&path, toml.as_bytes())?;
        Ok(path)
    }

    /// The server and log4j configs of Kafka node `index`.
    pub fn write_kafka_config(
        &self,
        index: usize,
        name: &str,
    ) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
        let data = self.dirs.data(name);
        let own = self.ports.kafka[index];
        let voters: Vec<String> = self
            .ports
            .kafka
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{}@127.0.0.1:{}", i + 1, k.controller))
            .collect();
        // Internal topics replicated like the platform's own: to three nodes where there
        // are three, two of them in sync for a write to count.
        let kafka = self.kafka_config();
        let (replication, min_isr) = (kafka.topic_replication, kafka.topic_min_insync_replicas);
        let server = format!(
            "# A node that is both broker and KRaft controller, on loopback only.\n\
             process.roles=broker,controller\n\
             node.id={node}\n\
             controller.quorum.voters={voters}\n\
             listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{broker}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\n\
             log.dirs={data}\n\
             num.partitions=3\n\
             auto.create.topics.enable=false\n\
             default.replication.factor={replication}\n\
             min.insync.replicas={min_isr}\n\
             offsets.topic.replication.factor={replication}\n\
             offsets.topic.num.partitions=10\n\
             transaction.state.log.replication.factor={replication}\n\
             transaction.state.log.min.isr={min_isr}\n\
             transaction.state.log.num.partitions=10\n\
             group.initial.rebalance.delay.ms=0\n\
             share.coordinator.state.topic.replication.factor={replication}\n\
             share.coordinator.state.topic.min.isr={min_isr}\n\
             # A node that stops heartbeating is fenced after 4 s (Kafka's default: 9 s), and\n\
             # its leaderships and group coordinators move then: well within the clients'\n\
             # 10 s session timeout, so consumers keep their group membership through it.\n\
             broker.session.timeout.ms=4000\n\
             broker.heartbeat.interval.ms=1000\n",
            node = index + 1,
            voters = voters.join(","),
            broker = own.broker,
            controller = own.controller,
            data = data.display(),
        );
        let log4j = format!(
            "rootLogger.level = INFO\n\
             rootLogger.appenderRef.file.ref = FILE\n\
             appender.file.type = File\n\
             appender.file.name = FILE\n\
             appender.file.fileName = {log}\n\
             appender.file.layout.type = PatternLayout\n\
             appender.file.layout.pattern = [%d] %p %m (%c)%n\n\
             logger.state.name = state.change.logger\n\
             logger.state.level = WARN\n",
            log = self.dirs.log(name).display(),
        );
        let server_path = self.dirs.config(&format!("{name}-server.properties"));
        let log4j_path = self.dirs.config(&format!("{name}-log4j2.properties"));
        std::fs::write(&server_path, server)?;
        std::fs::write(&log4j_path, log4j)?;
        Ok((server_path, log4j_path))
    }

    /// The id every node of this instance's Kafka cluster is formatted with: made once,
    /// kept, so that a node whose data is wiped can join its cluster again.
    pub fn kafka_cluster_id(&self) -> anyhow::Result<String> {
        let path = self.dirs.config("kafka-cluster-id");
        if let Ok(id) = std::fs::read_to_string(&path) {
            return Ok(id.trim().to_owned());
        }
        let id = kafka_cluster_id();
        std::fs::write(&path, &id)?;
        Ok(id)
    }
}

/// Writes a file only its owner can read: service configs hold the instance's secrets.
fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents)
}

/// A cluster id as Kafka makes them: a random UUID, base64url without padding (22 chars).
fn kafka_cluster_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().into_bytes())
}

/// Refuses to go on when `wanted` is not the shape the instance was made with.
pub fn ensure_topology(instance: &Instance, wanted: Topology) -> anyhow::Result<()> {
    if instance.topology() != wanted {
        bail!(
            "this instance ({}) was made {}; `./dev reset` removes it (and its data) so that \
             `./dev up{}` can make a {} one",
            instance.dirs.root.display(),
            instance.topology().name(),
            if wanted == Topology::Cluster {
                " --cluster"
            } else {
                ""
            },
            wanted.name()
        );
    }
    Ok(())
}

/// The last `lines` lines of a log file.
pub fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = kafka_cluster_id();
        assert_eq!(id.len(), 22);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(id, kafka_cluster_id());
    }

    fn all_ports(ports: &Ports) -> Vec<u16> {
        let mut all = ports.mongo.clone();
        all.extend(ports.kafka.iter().flat_map(|k| [k.broker, k.controller]));
        all.extend([ports.registry, ports.registry_management]);
        all.extend(ports.services.values().flatten());
        all
    }

    #[test]
    fn ports_are_distinct_in_either_topology() {
        for topology in [Topology::Single, Topology::Cluster] {
            for ports in [Ports::standard(topology), Ports::free(topology).unwrap()] {
                let mut all = all_ports(&ports);
                let count = all.len();
                all.sort_unstable();
                all.dedup();
                assert_eq!(all.len(), count, "{topology:?}: {ports:?}");
            }
        }
    }

    #[test]
    fn a_cluster_has_three_of_each_replica_and_two_of_each_stateful_service() {
        let ports = Ports::standard(Topology::Cluster);
        assert_eq!(ports.mongo, [27017, 27018, 27019]);
        assert_eq!(ports.kafka.len(), 3);
        assert_eq!(ports.services["event"], [3002, 3102]);
        assert_eq!(ports.services["gateway"], [3000]);
        assert_eq!(Ports::standard(Topology::Single).services["event"], [3002]);
    }

    #[test]
    fn ports_saved_before_clusters_are_read_as_a_single_instance() {
        let before = r#"{"mongo": 1, "kafka": 2, "kafka_controller": 3, "registry": 4,
            "registry_management": 5, "services": {"event": 6}}"#;
        let ports = Ports::load(before.as_bytes()).unwrap();
        assert_eq!(ports.topology, Topology::Single);
        assert_eq!(ports.kafka[0].controller, 3);
        assert_eq!(ports.services["event"], [6]);
        let again = serde_json::to_vec(&ports).unwrap();
        assert_eq!(Ports::load(&again).unwrap().mongo, [1]);
    }
}
