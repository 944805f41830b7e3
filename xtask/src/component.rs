//! One process of an instance: how it is named, started, probed, found and stopped.

use crate::stack::{Instance, InstanceKind, REPLICA_SET, tail};
use anyhow::{Context, bail};
use messaging::kafka;
use service_config::catalog::ServiceSpec;
use std::process::Command;
use std::time::{Duration, Instant};
use supervise::manifest::Kind;
use supervise::process;

/// A process of the platform. The number is the member's index: which replica-set member,
/// which Kafka node, which instance of a service.
#[derive(Debug, Clone, Copy)]
pub enum Component {
    Mongo(usize),
    Kafka(usize),
    Registry,
    Service(ServiceSpec, usize),
}

/// The first member of anything is named plainly (`mongod`, `kafka`, `event`), the others
/// by their number (`mongod-2`, `kafka-3`, `event-2`): names of a single instance read as
/// they always have.
fn numbered(base: &str, index: usize) -> String {
    match index {
        0 => base.to_owned(),
        n => format!("{base}-{}", n + 1),
    }
}

impl Component {
    pub fn name(&self) -> String {
        match self {
            Component::Mongo(i) => numbered("mongod", *i),
            Component::Kafka(i) => numbered("kafka", *i),
            Component::Registry => "schema-registry".to_owned(),
            Component::Service(spec, i) => numbered(spec.name, *i),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Component::Mongo(_) => Kind::Mongod,
            Component::Kafka(_) => Kind::Kafka,
            Component::Registry => Kind::Registry,
            Component::Service(spec, _) => Kind::Service(spec.name.to_owned()),
        }
    }

    /// A Kafka node's `node.id`.
    pub fn kafka_node_id(&self) -> Option<i32> {
        match self {
            Component::Kafka(i) => Some(*i as i32 + 1),
            _ => None,
        }
    }

    pub fn port(&self, instance: &Instance) -> u16 {
        let ports = &instance.ports;
        match self {
            Component::Mongo(i) => ports.mongo[*i],
            Component::Kafka(i) => ports.kafka[*i].broker,
            Component::Registry => ports.registry,
            Component::Service(spec, i) => ports.services[spec.name][*i],
        }
    }

    /// Every port the component listens on.
    fn ports(&self, instance: &Instance) -> Vec<u16> {
        match self {
            Component::Kafka(i) => {
                let node = instance.ports.kafka[*i];
                vec![node.broker, node.controller]
            }
            Component::Registry => {
                vec![instance.ports.registry, instance.ports.registry_management]
            }
            other => vec![other.port(instance)],
        }
    }

    pub fn endpoint(&self, instance: &Instance) -> String {
        match self {
            Component::Mongo(_) | Component::Kafka(_) => {
                format!("127.0.0.1:{}", self.port(instance))
            }
            Component::Registry => instance.registry_url(),
            Component::Service(..) => format!("http://127.0.0.1:{}", self.port(instance)),
        }
    }

    fn config_file(&self, instance: &Instance) -> std::path::PathBuf {
        match self {
            Component::Kafka(_) => instance
                .dirs
                .config(&format!("{}-server.properties", self.name())),
            _ => instance.dirs.config(&format!("{}.toml", self.name())),
        }
    }

    /// A string in the process's command line or environment that only this instance's copy
    /// has.
    pub fn marker(&self, instance: &Instance) -> String {
        match self {
            // Services find their config through REWARDS_CONFIG_FILE, in their environment;
            // a Kafka node's data directory is inside the properties file its command names.
            Component::Service(..) | Component::Kafka(_) => {
                self.config_file(instance).display().to_string()
            }
            Component::Mongo(_) | Component::Registry => {
                instance.dirs.data(&self.name()).display().to_string()
            }
        }
    }

    pub fn stop_grace(&self) -> Duration {
        match self {
            // A broker flushes and closes its logs; give it time so the next start is quick.
            Component::Kafka(_) => Duration::from_secs(30),
            _ => Duration::from_secs(15),
        }
    }

    pub fn running_pid(&self, instance: &Instance) -> Option<u32> {
        process::running(
            &instance.dirs.pid_file(&self.name()),
            &self.marker(instance),
        )
    }

    pub fn start_if_stopped(&self, instance: &Instance) -> anyhow::Result<()> {
        let name = self.name();
        if let Some(pid) = self.running_pid(instance) {
            if !self.is_stale(instance, pid) {
                println!("{name:<20} already running (pid {pid})");
                return Ok(());
            }
            // The binary was rebuilt since this process started: run the new code.
            println!("{name:<20} restarting on the rebuilt binary");
            process::stop(pid, self.stop_grace());
        }
        // Someone else on our port would answer our health checks and fool us.
        for port in self.ports(instance) {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                bail!(
                    "port {port} for {name} is taken by a process this instance did not start \
                     (see `ss -ltnp | grep :{port}`)"
                );
            }
        }
        let mut command = self.command(instance)?;
        let pid = process::spawn(
            &mut command,
            &instance.dirs.log(&name),
            &instance.dirs.pid_file(&name),
        )?;
        println!("{name:<20} started (pid {pid})");
        Ok(())
    }

    /// A service runs outdated code when it runs another binary than the one this `up` wants
    /// (debug vs release), or when its binary was rebuilt after it started (the kernel then
    /// marks the executable it runs as deleted).
    fn is_stale(&self, instance: &Instance, pid: u32) -> bool {
        let Component::Service(spec, _) = self else {
            return false;
        };
        let Ok(running) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            return false;
        };
        running != instance.service_binary(spec.name)
    }

    fn command(&self, instance: &Instance) -> anyhow::Result<Command> {
        match self {
            Component::Mongo(_) => self.mongod_command(instance),
            Component::Kafka(i) => self.kafka_command(instance, *i),
            Component::Registry => self.registry_command(instance),
            Component::Service(spec, i) => {
                let config = instance.write_service_config(spec, *i, &self.name())?;
                let binary = instance.service_binary(spec.name);
                if !binary.exists() {
                    bail!("{} is not built (expected {})", spec.name, binary.display());
                }
                let mut c = Command::new(binary);
                c.env(service_config::CONFIG_FILE_ENV, config);
                Ok(c)
            }
        }
    }

    fn mongod_command(&self, instance: &Instance) -> anyhow::Result<Command> {
        let data = instance.dirs.data(&self.name());
        std::fs::create_dir_all(&data)?;
        let mut c = Command::new(&instance.tools.mongod);
        c.args(["--replSet", REPLICA_SET, "--bind_ip", "127.0.0.1"])
            .arg("--port")
            .arg(self.port(instance).to_string())
            .arg("--dbpath")
            .arg(&data)
            // Tests and cluster members: a small cache, several share the memory. `up`: 1 GiB,
            // so that the working set of a long load (claims, inbox, outbox, progress) stays
            // in memory; with 0.25 GiB, eviction took ~9% of mongod's CPU during the claims
            // benchmark.
            .args([
                "--wiredTigerCacheSizeGB",
                match (instance.kind, instance.topology().replicas()) {
                    (InstanceKind::Dev, 1) => "1",
                    _ => "0.25",
                },
            ])
            // TTL indexes (outbox, inbox) are swept every second instead of every minute.
            .args(["--setParameter", "ttlMonitorSleepSecs=1"])
            // A transaction whose client died (a service killed mid-batch) holds its writes
            // until it is aborted for its age: after 10 s (checked every 5 s) instead of
            // 60 s (up to 90 s), during which every other writer of those documents loses
            // with a write conflict. The platform's transactions last milliseconds.
            .args(["--setParameter", "transactionLifetimeLimitSeconds=10"])
            // A primary told to stop waits at most 2 s (MongoDB: 15 s) for a secondary to
            // catch up before it steps down: every write the platform makes is majority
            // acknowledged already, and when a whole set stops there is no one to wait for.
            .args([
                "--setParameter",
                "shutdownTimeoutMillisForSignaledShutdown=2000",
            ]);
        Ok(c)
    }

    fn kafka_command(&self, instance: &Instance, index: usize) -> anyhow::Result<Command> {
        let name = self.name();
        let (server, log4j) = instance.write_kafka_config(index, &name)?;
        if !instance.dirs.data(&name).join("meta.properties").exists() {
            format_kafka_storage(instance, &server, &log4j)?;
        }
        // Three nodes share two cores with everything else: a smaller heap each.
        let heap = match instance.topology().replicas() {
            1 => "-Xmx512m",
            _ => "-Xmx384m",
        };
        let mut c = Command::new(&instance.tools.java);
        c.args(["-Xms64m", heap, "-XX:+UseSerialGC"])
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg("-cp")
            .arg(instance.tools.kafka_libs.join("*"))
            .arg("kafka.Kafka")
            .arg(&server);
        Ok(c)
    }

    fn registry_command(&self, instance: &Instance) -> anyhow::Result<Command> {
        let data = instance.dirs.data(&self.name());
        std::fs::create_dir_all(&data)?;
        let ports = &instance.ports;
        let mut c = Command::new(&instance.tools.java);
        c.args(["-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-Dquarkus.http.host=127.0.0.1")
            .arg(format!("-Dquarkus.http.port={}", ports.registry))
            .arg("-Dquarkus.management.host=127.0.0.1")
            .arg(format!(
                "-Dquarkus.management.port={}",
                ports.registry_management
            ))
            .arg("-Dquarkus.http.access-log.enabled=false")
            // Durable storage: the SQL store on an H2 file. WRITE_DELAY=0 makes each commit
            // reach the file at once, so a kill -9 loses no registered schema.
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
            .arg(&instance.tools.apicurio_jar);
        Ok(c)
    }

    /// One health check, bounded by a short timeout.
    pub async fn probe(&self, instance: &Instance) -> anyhow::Result<()> {
        let timeout = Duration::from_secs(2);
        match self {
            Component::Mongo(_) => {
                mongo_kit::ping_member(&self.endpoint(instance), timeout).await?
            }
            Component::Kafka(_) => {
                // This node alone: a metadata request it answers itself.
                let mut config = instance.kafka_config();
                config.brokers = self.endpoint(instance);
                let producer = kafka::producer(&config)?;
                kafka::ping(&producer, timeout).await?
            }
            Component::Registry => {
                http_ok(&format!(
                    "http://127.0.0.1:{}/health/ready",
                    instance.ports.registry_management
                ))
                .await?
            }
            Component::Service(..) => {
                http_ok(&format!("{}/readyz", self.endpoint(instance))).await?
            }
        }
        Ok(())
    }

    /// Polls [`Self::probe`] until it passes; fails early, with the end of the log, if the
    /// process exits.
    pub async fn wait_ready(&self, instance: &Instance) -> anyhow::Result<()> {
        let name = self.name();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(90);
        loop {
            let last_error = match self.probe(instance).await {
                Ok(()) => {
                    println!("{name:<20} healthy after {:.1?}", started.elapsed());
                    return Ok(());
                }
                Err(e) => e,
            };
            // The pid file was just written by us, so a plain liveness check suffices (and the
            // marker check cannot be used yet: for a moment after spawn the process is still
            // inside exec, with its command line and environment not yet readable).
            let pid = process::read_pid(&instance.dirs.pid_file(&name));
            if !pid.is_some_and(process::is_alive) {
                bail!(
                    "{name} exited during start-up; the end of {}:\n{}",
                    instance.dirs.log(&name).display(),
                    tail(&instance.dirs.log(&name), 30)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} not healthy after {:?}: {last_error:#}; see {}",
                    deadline - started,
                    instance.dirs.log(&name).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Initialises a KRaft metadata directory (what `kafka-storage.sh format` does), with the
/// instance's one cluster id.
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
        .arg(instance.kafka_cluster_id()?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_member_keeps_the_plain_name() {
        assert_eq!(Component::Mongo(0).name(), "mongod");
        assert_eq!(Component::Kafka(2).name(), "kafka-3");
        let event = service_config::catalog::EVENT;
        assert_eq!(Component::Service(event, 0).name(), "event");
        assert_eq!(Component::Service(event, 1).name(), "event-2");
    }
}
