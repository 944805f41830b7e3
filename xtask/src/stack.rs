//! The platform as a set of supervised processes: infrastructure first (MongoDB, Kafka, the
//! schema registry), then the five services, each started, waited on until healthy, probed
//! and stopped the same way.

use crate::install::Tools;
use crate::layout::{Home, InstanceDirs};
use crate::process;
use anyhow::{Context, bail};
use futures::future::try_join_all;
use messaging::registry::Compatibility;
use messaging::{SchemaRegistry, kafka, topics};
use serde::{Deserialize, Serialize};
use service_config::catalog::{self, Needs, ServiceSpec};
use service_config::{KafkaConfig, RegistryConfig};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

const REPLICA_SET: &str = "rs0";

/// Every port an instance uses; saved next to it so `status` and `down` find them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ports {
    pub mongo: u16,
    pub kafka: u16,
    pub kafka_controller: u16,
    pub registry: u16,
    pub registry_management: u16,
    pub services: BTreeMap<String, u16>,
}

impl Ports {
    /// The design's well-known ports: what `./dev up` uses.
    pub fn standard() -> Self {
        Self {
            mongo: catalog::MONGO_PORT,
            kafka: catalog::KAFKA_PORT,
            kafka_controller: catalog::KAFKA_CONTROLLER_PORT,
            registry: catalog::REGISTRY_PORT,
            registry_management: catalog::REGISTRY_MANAGEMENT_PORT,
            services: catalog::SERVICES
                .iter()
                .map(|s| (s.name.to_owned(), s.default_port))
                .collect(),
        }
    }

    /// Free loopback ports, so a test run never collides with `./dev up` or another run.
    pub fn free() -> anyhow::Result<Self> {
        // Hold every listener until all are picked so no port is handed out twice.
        let listeners = (0..5 + catalog::SERVICES.len())
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let mut next = || ports.next().expect("one listener per port");
        Ok(Self {
            mongo: next(),
            kafka: next(),
            kafka_controller: next(),
            registry: next(),
            registry_management: next(),
            services: catalog::SERVICES
                .iter()
                .map(|s| (s.name.to_owned(), next()))
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
    /// Opens the instance at `dirs`, reusing its recorded ports, or records `ports` for it.
    pub fn open(
        home: &Home,
        tools: Tools,
        dirs: InstanceDirs,
        ports: Ports,
        kind: InstanceKind,
    ) -> anyhow::Result<Self> {
        dirs.create()?;
        let ports = match std::fs::read(dirs.ports_file()) {
            Ok(saved) => serde_json::from_slice(&saved).context("reading ports.json")?,
            Err(_) => {
                std::fs::write(dirs.ports_file(), serde_json::to_vec_pretty(&ports)?)?;
                ports
            }
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

    /// The binary a service runs from: debug builds, or release ones for measurements.
    pub fn service_binary(&self, name: &str) -> std::path::PathBuf {
        let profile = if self.release { "release" } else { "debug" };
        self.home.target_dir().join(profile).join(name)
    }

    pub fn mongo_uri(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?replicaSet={REPLICA_SET}",
            self.ports.mongo
        )
    }

    pub fn kafka_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.ports.kafka)
    }

    pub fn registry_url(&self) -> String {
        format!("http://127.0.0.1:{}/apis/ccompat/v7", self.ports.registry)
    }

    pub fn service_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports.services[name])
    }

    pub fn kafka_config(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.kafka_brokers(),
            client_id: "dev-tool".into(),
            ..KafkaConfig::default()
        }
    }

    /// Every component, in start order.
    pub fn components(&self) -> Vec<Component> {
        let mut all = vec![Component::Mongo, Component::Kafka, Component::Registry];
        all.extend(catalog::SERVICES.iter().copied().map(Component::Service));
        all
    }

    /// Starts what is not running yet and waits until everything is healthy. Infrastructure
    /// comes up concurrently, then the services concurrently.
    pub async fn start(&self) -> anyhow::Result<()> {
        let (infra, services): (Vec<_>, Vec<_>) = self
            .components()
            .into_iter()
            .partition(|c| !matches!(c, Component::Service(_)));
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

    /// What the platform expects to exist before services start: its topics, and BACKWARD as
    /// the registry's default compatibility (Apicurio's own default is NONE).
    async fn prepare_infrastructure(&self) -> anyhow::Result<()> {
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

    /// Stops every component this instance started, services first.
    pub fn stop(&self) {
        let running = self
            .components()
            .iter()
            .any(|c| c.running_pid(self).is_some());
        if !running {
            println!("nothing of {} is running", self.dirs.root.display());
        }
        for component in self.components().iter().rev() {
            if let Some(pid) = component.running_pid(self) {
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
            }
        }
    }

    /// One line per component: pid, port, health, memory. Returns whether all are healthy.
    pub async fn status(&self) -> (String, bool) {
        let mut out = format!(
            "{:<20} {:>7} {:>6}  {:<8} {:>9}  {}\n",
            "COMPONENT", "PID", "PORT", "HEALTH", "RSS", "ENDPOINT"
        );
        let mut all_healthy = true;
        for component in self.components() {
            let pid = component.running_pid(self);
            let health = match pid {
                None => "stopped".to_owned(),
                Some(_) => match component.probe(self).await {
                    Ok(()) => "healthy".to_owned(),
                    Err(_) => "unhealthy".to_owned(),
                },
            };
            all_healthy &= health == "healthy";
            let rss = pid
                .and_then(process::rss_kib)
                .map(|kib| format!("{} MiB", kib / 1024))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<20} {:>7} {:>6}  {:<8} {:>9}  {}",
                component.name(),
                pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                component.port(self),
                health,
                rss,
                component.endpoint(self),
            );
        }
        (out, all_healthy)
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

    fn write_service_config(&self, spec: &ServiceSpec) -> anyhow::Result<std::path::PathBuf> {
        let mut toml = format!(
            "# Written by ./dev for this instance; env vars (REWARDS_*) still override it.\n\
             [http]\nhost = \"127.0.0.1\"\nport = {}\n\n[log]\nformat = \"json\"\n",
            self.ports.services[spec.name]
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
            for (name, _) in spec.upstreams {
                let _ = writeln!(
                    toml,
                    "{} = \"{}\"",
                    name.replace('-', "_"),
                    self.service_url(name)
                );
            }
        }
        let path = self.dirs.config(&format!("{}.toml", spec.name));
        write_private(&path, toml.as_bytes())?;
        Ok(path)
    }

    fn write_kafka_config(&self) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
        let data = self.dirs.data("kafka");
        let server = format!(
            "# One node that is both broker and KRaft controller, on loopback only.\n\
             process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{broker}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\n\
             log.dirs={data}\n\
             num.partitions=3\n\
             auto.create.topics.enable=false\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=10\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             transaction.state.log.num.partitions=10\n\
             group.initial.rebalance.delay.ms=0\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n",
            broker = self.ports.kafka,
            controller = self.ports.kafka_controller,
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
            log = self.dirs.log("kafka").display(),
        );
        let server_path = self.dirs.config("kafka-server.properties");
        let log4j_path = self.dirs.config("kafka-log4j2.properties");
        std::fs::write(&server_path, server)?;
        std::fs::write(&log4j_path, log4j)?;
        Ok((server_path, log4j_path))
    }
}

/// A process of the platform.
#[derive(Debug, Clone, Copy)]
pub enum Component {
    Mongo,
    Kafka,
    Registry,
    Service(ServiceSpec),
}

impl Component {
    pub fn name(&self) -> &'static str {
        match self {
            Component::Mongo => "mongod",
            Component::Kafka => "kafka",
            Component::Registry => "schema-registry",
            Component::Service(spec) => spec.name,
        }
    }

    fn port(&self, instance: &Instance) -> u16 {
        let ports = &instance.ports;
        match self {
            Component::Mongo => ports.mongo,
            Component::Kafka => ports.kafka,
            Component::Registry => ports.registry,
            Component::Service(spec) => ports.services[spec.name],
        }
    }

    /// Every port the component listens on.
    fn ports(&self, instance: &Instance) -> Vec<u16> {
        match self {
            Component::Kafka => vec![instance.ports.kafka, instance.ports.kafka_controller],
            Component::Registry => {
                vec![instance.ports.registry, instance.ports.registry_management]
            }
            other => vec![other.port(instance)],
        }
    }

    fn endpoint(&self, instance: &Instance) -> String {
        match self {
            Component::Mongo => instance.mongo_uri(),
            Component::Kafka => instance.kafka_brokers(),
            Component::Registry => instance.registry_url(),
            Component::Service(spec) => instance.service_url(spec.name),
        }
    }

    /// A string in the process's command line or environment that only this instance's copy
    /// has.
    fn marker(&self, instance: &Instance) -> String {
        match self {
            // Services find their config through REWARDS_CONFIG_FILE, in their environment.
            Component::Service(spec) => instance
                .dirs
                .config(&format!("{}.toml", spec.name))
                .display()
                .to_string(),
            // Its data directory is inside the properties file, which the command line names.
            Component::Kafka => instance
                .dirs
                .config("kafka-server.properties")
                .display()
                .to_string(),
            Component::Mongo | Component::Registry => {
                instance.dirs.data(self.name()).display().to_string()
            }
        }
    }

    fn stop_grace(&self) -> Duration {
        match self {
            // A broker flushes and closes its logs; give it time so the next start is quick.
            Component::Kafka => Duration::from_secs(30),
            _ => Duration::from_secs(15),
        }
    }

    pub fn running_pid(&self, instance: &Instance) -> Option<u32> {
        process::running(&instance.dirs.pid_file(self.name()), &self.marker(instance))
    }

    fn start_if_stopped(&self, instance: &Instance) -> anyhow::Result<()> {
        if let Some(pid) = self.running_pid(instance) {
            if !self.is_stale(instance, pid) {
                println!("{:<20} already running (pid {pid})", self.name());
                return Ok(());
            }
            // The binary was rebuilt since this process started: run the new code.
            println!("{:<20} restarting on the rebuilt binary", self.name());
            process::stop(pid, self.stop_grace());
        }
        // Someone else on our port would answer our health checks and fool us.
        for port in self.ports(instance) {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                bail!(
                    "port {port} for {} is taken by a process this instance did not start \
                     (see `ss -ltnp | grep :{port}`)",
                    self.name()
                );
            }
        }
        let mut command = self.command(instance)?;
        let pid = process::spawn(
            &mut command,
            &instance.dirs.log(self.name()),
            &instance.dirs.pid_file(self.name()),
        )?;
        println!("{:<20} started (pid {pid})", self.name());
        Ok(())
    }

    /// A service whose binary is newer than its pid file runs outdated code.
    /// A service runs outdated code when it runs another binary than the one this `up` wants
    /// (debug vs release), or when its binary was rebuilt after it started (the kernel then
    /// marks the executable it runs as deleted).
    fn is_stale(&self, instance: &Instance, pid: u32) -> bool {
        let Component::Service(spec) = self else {
            return false;
        };
        let Ok(running) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            return false;
        };
        running != instance.service_binary(spec.name)
    }

    fn command(&self, instance: &Instance) -> anyhow::Result<Command> {
        let tools = &instance.tools;
        let dirs = &instance.dirs;
        Ok(match self {
            Component::Mongo => {
                let data = dirs.data(self.name());
                std::fs::create_dir_all(&data)?;
                let mut c = Command::new(&tools.mongod);
                c.args(["--replSet", REPLICA_SET, "--bind_ip", "127.0.0.1"])
                    .arg("--port")
                    .arg(instance.ports.mongo.to_string())
                    .arg("--dbpath")
                    .arg(&data)
                    // Tests: a small cache, several instances may share the memory. `up`: 1 GiB,
                    // so that the working set of a long load (claims, inbox, outbox, progress)
                    // stays in memory; with 0.25 GiB, eviction took ~9% of mongod's CPU
                    // during the claims benchmark.
                    .args([
                        "--wiredTigerCacheSizeGB",
                        match instance.kind {
                            InstanceKind::Dev => "1",
                            InstanceKind::Test => "0.25",
                        },
                    ])
                    // TTL indexes (outbox, inbox) are swept every second instead of every minute.
                    .args(["--setParameter", "ttlMonitorSleepSecs=1"]);
                c
            }
            Component::Kafka => {
                let (server, log4j) = instance.write_kafka_config()?;
                let data = dirs.data(self.name());
                if !data.join("meta.properties").exists() {
                    format_kafka_storage(instance, &server, &log4j)?;
                }
                let mut c = Command::new(&tools.java);
                c.args(["-Xms64m", "-Xmx512m", "-XX:+UseSerialGC"])
                    .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
                    .arg("-cp")
                    .arg(tools.kafka_libs.join("*"))
                    .arg("kafka.Kafka")
                    .arg(&server);
                c
            }
            Component::Registry => {
                let data = dirs.data(self.name());
                std::fs::create_dir_all(&data)?;
                let mut c = Command::new(&tools.java);
                c.args(["-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
                    .arg("-Dquarkus.http.host=127.0.0.1")
                    .arg(format!("-Dquarkus.http.port={}", instance.ports.registry))
                    .arg("-Dquarkus.management.host=127.0.0.1")
                    .arg(format!("-Dquarkus.management.port={}", instance.ports.registry_management))
                    .arg("-Dquarkus.http.access-log.enabled=false")
                    // Durable storage: the SQL store on an H2 file. WRITE_DELAY=0 makes each
                    // commit reach the file at once, so a kill -9 loses no registered schema.
                    .arg("-Dapicurio.storage.kind=sql")
                    .arg("-Dapicurio.storage.sql.kind=h2")
                    .arg(format!(
                        "-Dapicurio.datasource.url=jdbc:h2:file:{}/registry;DB_CLOSE_ON_EXIT=FALSE;WRITE_DELAY=0",
                        data.display()
                    ))
                    .arg("-Dapicurio.datasource.jdbc.initial-size=2")
                    .arg("-Dapicurio.datasource.jdbc.min-size=2")
                    .arg("-Dapicurio.datasource.jdbc.max-size=10")
                    .arg("-jar")
                    .arg(&tools.apicurio_jar);
                c
            }
            Component::Service(spec) => {
                let config = instance.write_service_config(spec)?;
                let binary = instance.service_binary(spec.name);
                if !binary.exists() {
                    bail!("{} is not built (expected {})", spec.name, binary.display());
                }
                let mut c = Command::new(binary);
                c.env(service_config::CONFIG_FILE_ENV, config);
                c
            }
        })
    }

    /// One health check, bounded by a short timeout.
    async fn probe(&self, instance: &Instance) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(2);
        match self {
            Component::Mongo => {
                mongo_kit::initiate_single_node_replica_set(
                    &format!("127.0.0.1:{}", instance.ports.mongo),
                    REPLICA_SET,
                    timeout,
                )
                .await?
            }
            Component::Kafka => {
                let producer = kafka::producer(&instance.kafka_config())?;
                kafka::ping(&producer, timeout).await?
            }
            Component::Registry => {
                http_ok(&format!(
                    "http://127.0.0.1:{}/health/ready",
                    instance.ports.registry_management
                ))
                .await?
            }
            Component::Service(spec) => {
                http_ok(&format!("{}/readyz", instance.service_url(spec.name))).await?
            }
        }
        Ok(())
    }

    /// Polls [`Self::probe`] until it passes; fails early, with the end of the log, if the
    /// process exits.
    async fn wait_ready(&self, instance: &Instance) -> anyhow::Result<()> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(90);
        loop {
            let last_error = match self.probe(instance).await {
                Ok(()) => {
                    println!(
                        "{:<20} healthy after {:.1?}",
                        self.name(),
                        started.elapsed()
                    );
                    return Ok(());
                }
                Err(e) => e,
            };
            // The pid file was just written by us, so a plain liveness check suffices (and the
            // marker check cannot be used yet: for a moment after spawn the process is still
            // inside exec, with its command line and environment not yet readable).
            let pid = process::read_pid(&instance.dirs.pid_file(self.name()));
            if !pid.is_some_and(process::is_alive) {
                bail!(
                    "{} exited during start-up; the end of {}:\n{}",
                    self.name(),
                    instance.dirs.log(self.name()).display(),
                    tail(&instance.dirs.log(self.name()), 30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not healthy after {:?}: {last_error:#}; see {}",
                    self.name(),
                    deadline - started,
                    instance.dirs.log(self.name()).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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

/// Initialises the KRaft metadata directory (what `kafka-storage.sh format` does).
fn format_kafka_storage(
    instance: &Instance,
    server: &std::path::Path,
    log4j: &std::path::Path,
) -> anyhow::Result<()> {
    let output = Command::new(&instance.tools.java)
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(instance.tools.kafka_libs.join("*"))
        .args(["kafka.tools.StorageTool", "format", "--cluster-id"])
        .arg(kafka_cluster_id())
        .arg("--config")
        .arg(server)
        .output()
        .context("running the Kafka storage tool")?;
    if !output.status.success() {
        bail!(
            "formatting Kafka storage failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A cluster id as Kafka makes them: a random UUID, base64url without padding (22 chars).
fn kafka_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits = 0u32;
    let mut width = 0;
    let mut id = String::with_capacity(22);
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        width += 8;
        while width >= 6 {
            width -= 6;
            id.push(ALPHABET[((bits >> width) & 63) as usize] as char);
        }
    }
    if width > 0 {
        id.push(ALPHABET[((bits << (6 - width)) & 63) as usize] as char);
    }
    id
}

async fn http_ok(url: &str) -> anyhow::Result<()> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client builds")
    });
    let response = client.get(url).send().await?;
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
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

    #[test]
    fn free_ports_are_distinct() {
        let ports = Ports::free().unwrap();
        let mut all = vec![
            ports.mongo,
            ports.kafka,
            ports.kafka_controller,
            ports.registry,
            ports.registry_management,
        ];
        all.extend(ports.services.values());
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
    }
}
