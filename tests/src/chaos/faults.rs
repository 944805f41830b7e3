//! The faults a chaos run injects into the instance, found through its manifest.
//!
//! Each fault is whole: it picks its target where it hurts most (the broker leading the most
//! activity partitions, the replica-set primary, the next service instance in turn), breaks
//! it, leaves it broken for a while, heals it (a killed process is started again exactly as
//! it ran, from its recorded command line and environment), and waits until the target is
//! healthy and back in its cluster before the next fault may begin.

use messaging::kafka::{TopicState, describe_topics};
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use service_config::KafkaConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use supervise::manifest::{Kind, Manifest, Member};
use supervise::process::{self, Launch, Sig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the broker leading the most activity partitions; start it again 10 s later.
    BrokerKill,
    /// SIGSTOP that broker for 15 s, longer than the session timeouts (10 s consumers, 9 s
    /// brokers), then SIGCONT.
    BrokerFreeze,
    /// SIGKILL the replica-set primary (a single mongod: the only one); start it again 10 s
    /// later.
    PrimaryKill,
    /// `replSetStepDown` on the primary: no primary until the set elects one (a single
    /// member steps down for 10 s, then elects itself again).
    PrimaryStepdown,
    /// SIGKILL an instance of auth, event or fulfillment, in turn; start it again 5 s later.
    ServiceKill,
    /// SIGKILL the schema registry; start it again 30 s later.
    RegistryDown,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::BrokerKill,
        FaultKind::BrokerFreeze,
        FaultKind::PrimaryKill,
        FaultKind::PrimaryStepdown,
        FaultKind::ServiceKill,
        FaultKind::RegistryDown,
    ];

    /// Whether the fault takes away a dependency every service needs when the instance has
    /// one of each (so `/readyz` must say so).
    pub fn takes_a_dependency(self) -> bool {
        self != FaultKind::ServiceKill
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::BrokerKill => "broker-kill",
            FaultKind::BrokerFreeze => "broker-freeze",
            FaultKind::PrimaryKill => "primary-kill",
            FaultKind::PrimaryStepdown => "primary-stepdown",
            FaultKind::ServiceKill => "service-kill",
            FaultKind::RegistryDown => "registry-down",
        }
    }

    /// How long the target stays broken.
    fn outage(self) -> Duration {
        Duration::from_secs(match self {
            FaultKind::BrokerKill | FaultKind::PrimaryKill => 10,
            FaultKind::BrokerFreeze => 15,
            FaultKind::PrimaryStepdown => 10,
            FaultKind::ServiceKill => 5,
            FaultKind::RegistryDown => 30,
        })
    }
}

/// One fault as it happened. Times are seconds since the run began.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub target: String,
    pub injected_at: f64,
    pub healed_at: f64,
    /// When the target was healthy and back in its cluster.
    pub settled_at: f64,
    /// From the injection to the first claim sent after it that succeeded end to end.
    pub recovered_after: Option<f64>,
    /// From the injection to the first `/readyz` of a service that failed, if one did.
    pub unready_after: Option<f64>,
    /// From the injection to every service's `/readyz` passing again, after one failed.
    pub ready_again_after: Option<f64>,
    /// Claim answers while the target was broken (from injection to healing), by status
    /// (0: no answer).
    pub answers_during: std::collections::BTreeMap<u16, u64>,
    /// Probes sent while the target was broken that succeeded before it was healed.
    pub succeeded_during: usize,
}

pub struct Injector {
    manifest: Manifest,
    kafka: KafkaConfig,
    /// Asks the cluster for its topics' state (one client for the whole run).
    metadata: FutureProducer,
    registry_url: String,
    turn: usize,
}

impl Injector {
    pub fn new(manifest: Manifest) -> anyhow::Result<Self> {
        let kafka = test_support::kafka();
        Ok(Self {
            manifest,
            metadata: messaging::kafka::producer(&kafka)?,
            kafka,
            registry_url: test_support::required(test_support::REGISTRY_URL),
            turn: 0,
        })
    }

    async fn topics(&self) -> anyhow::Result<Vec<TopicState>> {
        Ok(describe_topics(&self.metadata, Duration::from_secs(5)).await?)
    }

    pub fn single(&self) -> bool {
        self.manifest.topology == "single"
    }

    /// Breaks, waits, heals and waits for the target to settle; `now` reads the run's clock.
    pub async fn inject(
        &mut self,
        kind: FaultKind,
        now: &(dyn Fn() -> f64 + Sync),
    ) -> anyhow::Result<FaultRecord> {
        let target = self.target(kind).await?;
        eprintln!("[chaos] {:>6.1}s {} of {}", now(), kind.name(), target.name);
        let injected_at = now();
        let readiness = ReadinessWatch::start(&self.manifest);
        match kind {
            FaultKind::BrokerFreeze => freeze(&target, kind.outage()).await?,
            FaultKind::PrimaryStepdown => self.step_down(&target).await?,
            _ => kill_and_restart(&target, kind.outage()).await?,
        }
        let healed_at = now();
        self.settle(&target).await?;
        let settled_at = now();
        let (unready_after, ready_again_after) = readiness.finish().await;
        eprintln!(
            "[chaos] {:>6.1}s {} settled ({:.1}s after the fault)",
            settled_at,
            target.name,
            settled_at - injected_at
        );
        Ok(FaultRecord {
            kind,
            target: target.name.clone(),
            injected_at,
            healed_at,
            settled_at,
            recovered_after: None,
            unready_after,
            ready_again_after,
            answers_during: Default::default(),
            succeeded_during: 0,
        })
    }

    async fn target(&mut self, kind: FaultKind) -> anyhow::Result<Member> {
        let member = match kind {
            FaultKind::BrokerKill | FaultKind::BrokerFreeze => self.busiest_broker().await?,
            FaultKind::PrimaryKill | FaultKind::PrimaryStepdown => self.primary().await?,
            FaultKind::RegistryDown => self.only(&Kind::Registry)?,
            FaultKind::ServiceKill => self.next_service()?,
        };
        Ok(member.clone())
    }

    fn only(&self, kind: &Kind) -> anyhow::Result<&Member> {
        self.manifest
            .of_kind(kind)
            .next()
            .ok_or_else(|| anyhow::anyhow!("the instance has no {kind:?}"))
    }

    /// The instances of event, fulfillment and auth, in that order, one per fault.
    fn next_service(&mut self) -> anyhow::Result<&Member> {
        let stateful = ["event", "reward-fulfillment", "auth"];
        let candidates: Vec<&Member> = stateful
            .iter()
            .flat_map(|service| self.manifest.of_kind(&Kind::Service((*service).to_owned())))
            .collect();
        anyhow::ensure!(
            !candidates.is_empty(),
            "no service instances in the manifest"
        );
        let name = candidates[self.turn % candidates.len()].name.clone();
        self.turn += 1;
        self.manifest
            .named(&name)
            .ok_or_else(|| anyhow::anyhow!("{name} vanished"))
    }

    /// The Kafka node leading the most `game.user-activity` partitions (the busiest topic),
    /// most partitions overall breaking a tie.
    async fn busiest_broker(&self) -> anyhow::Result<&Member> {
        let metadata = self.topics().await?;
        let mut score: HashMap<i32, (usize, usize)> = HashMap::new();
        for topic in &metadata {
            for (leader, _, _) in &topic.partitions {
                let entry = score.entry(*leader).or_default();
                entry.1 += 1;
                if topic.name == contracts::topics::USER_ACTIVITY {
                    entry.0 += 1;
                }
            }
        }
        let node = score
            .into_iter()
            .max_by_key(|(node, s)| (*s, -node))
            .map(|(node, _)| node)
            .ok_or_else(|| anyhow::anyhow!("no partition has a leader"))?;
        self.manifest
            .of_kind(&Kind::Kafka)
            .find(|m| m.node_id == Some(node))
            .ok_or_else(|| anyhow::anyhow!("no Kafka node {node} in the manifest"))
    }

    /// The replica-set member that is primary now.
    async fn primary(&self) -> anyhow::Result<&Member> {
        for member in self.manifest.of_kind(&Kind::Mongod) {
            let Ok(states) = mongo_kit::replica_set_members(&host(member)).await else {
                continue;
            };
            if let Some((primary, _)) = states.iter().find(|(_, s)| s == "PRIMARY")
                && let Some(found) = self
                    .manifest
                    .of_kind(&Kind::Mongod)
                    .find(|m| &host(m) == primary)
            {
                return Ok(found);
            }
        }
        anyhow::bail!("no replica-set member is primary")
    }

    async fn step_down(&self, primary: &Member) -> anyhow::Result<()> {
        let client = mongo_kit::direct_client(&host(primary)).await?;
        let mut command = mongo_kit::mongodb::bson::doc! {
            "replSetStepDown": FaultKind::PrimaryStepdown.outage().as_secs() as i64,
            "secondaryCatchUpPeriodSecs": 5,
        };
        if self.single() {
            // Nobody to hand over to: step down all the same.
            command.insert("force", true);
        }
        // The server closes connections as it steps down, so the command may "fail".
        let _ = client.database("admin").run_command(command).await;
        let states = mongo_kit::replica_set_members(&host(primary)).await?;
        let still = states
            .iter()
            .any(|(h, s)| h == &host(primary) && s == "PRIMARY");
        anyhow::ensure!(
            !still,
            "{} is still primary after stepping down",
            primary.name
        );
        if self.single() {
            // It stays SECONDARY for the step-down period, then elects itself.
            tokio::time::sleep(FaultKind::PrimaryStepdown.outage()).await;
        }
        Ok(())
    }

    /// Waits (up to two minutes) until `target` answers again and its cluster is whole: all
    /// replica-set members primary or secondary, or every partition's ISR complete.
    pub async fn settle(&self, target: &Member) -> anyhow::Result<()> {
        // A Kafka node is asked itself first, through a client that knows only it: the
        // others' metadata may not have noticed it died.
        let own = match target.kind {
            Kind::Kafka => {
                let mut own = self.kafka.clone();
                own.brokers = host(target);
                Some(messaging::kafka::producer(&own)?)
            }
            _ => None,
        };
        let give_up = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut last = String::new();
        while tokio::time::Instant::now() < give_up {
            match self.whole(target, own.as_ref()).await {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::bail!("{} did not settle within 2 min: {last}", target.name)
    }

    /// `own`: for a Kafka node, a client of that node alone.
    async fn whole(&self, target: &Member, own: Option<&FutureProducer>) -> anyhow::Result<()> {
        match &target.kind {
            Kind::Mongod => {
                let states = mongo_kit::replica_set_members(&host(target)).await?;
                let primaries = states.iter().filter(|(_, s)| s == "PRIMARY").count();
                let healthy = states
                    .iter()
                    .all(|(_, s)| s == "PRIMARY" || s == "SECONDARY");
                anyhow::ensure!(primaries == 1 && healthy, "replica set: {states:?}");
            }
            Kind::Kafka => {
                if let Some(own) = own {
                    messaging::kafka::ping(own, Duration::from_secs(2)).await?;
                }
                for topic in self.topics().await? {
                    for (leader, replicas, isr) in &topic.partitions {
                        anyhow::ensure!(
                            *leader >= 0 && isr == replicas,
                            "{} has leader {leader}, ISR {isr:?} of {replicas:?}",
                            topic.name
                        );
                    }
                }
            }
            Kind::Registry => http_ok(&format!("{}/subjects", self.registry_url)).await?,
            Kind::Service(_) => {
                http_ok(&format!("http://127.0.0.1:{}/readyz", target.port)).await?
            }
        }
        Ok(())
    }
}

/// Watches every service's `/readyz` (every 250 ms) from the injection on: when the first
/// one failed, and when all passed again after that. Both in seconds after the injection.
struct ReadinessWatch {
    stop: tokio_util::sync::CancellationToken,
    seen: Arc<Mutex<(Option<f64>, Option<f64>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadinessWatch {
    fn start(manifest: &Manifest) -> Self {
        let urls: Vec<String> = manifest
            .members
            .iter()
            .filter(|m| matches!(m.kind, Kind::Service(_)))
            .map(|m| format!("http://127.0.0.1:{}/readyz", m.port))
            .collect();
        let stop = tokio_util::sync::CancellationToken::new();
        let seen = Arc::new(Mutex::new((None, None)));
        let (watching, record) = (stop.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                let checks = urls.iter().map(|url| http_ok(url));
                let ready = futures::future::join_all(checks)
                    .await
                    .iter()
                    .all(Result::is_ok);
                let at = started.elapsed().as_secs_f64();
                let done = {
                    let mut seen = record.lock().expect("never poisoned");
                    match (ready, seen.0) {
                        (false, None) => {
                            seen.0 = Some(at);
                            false
                        }
                        (true, Some(_)) => {
                            seen.1 = Some(at);
                            true
                        }
                        // Nothing failed by the time the fault was over: nothing to wait for.
                        (true, None) => watching.is_cancelled(),
                        (false, Some(_)) => false,
                    }
                };
                if done {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self { stop, seen, task }
    }

    /// Stops watching once every service is ready again (30 s at most after this call).
    async fn finish(self) -> (Option<f64>, Option<f64>) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(30), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        *self.seen.lock().expect("never poisoned")
    }
}

fn host(member: &Member) -> String {
    format!("127.0.0.1:{}", member.port)
}

async fn kill_and_restart(target: &Member, outage: Duration) -> anyhow::Result<()> {
    let pid = target
        .pid()
        .ok_or_else(|| anyhow::anyhow!("{} is not running", target.name))?;
    let launch = Launch::of(pid)?;
    process::signal(pid, Sig::SIGKILL)?;
    let gone = tokio::time::Instant::now() + Duration::from_secs(10);
    while process::is_alive(pid) && tokio::time::Instant::now() < gone {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(outage).await;
    launch.spawn(&target.log, &target.pid_file)?;
    Ok(())
}

/// SIGSTOP for `outage`; SIGCONT even if the run is cut short in between.
async fn freeze(target: &Member, outage: Duration) -> anyhow::Result<()> {
    struct Thaw(u32);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = process::signal(self.0, Sig::SIGCONT);
        }
    }
    let pid = target
        .pid()
        .ok_or_else(|| anyhow::anyhow!("{} is not running", target.name))?;
    process::signal(pid, Sig::SIGSTOP)?;
    let _thaw = Thaw(pid);
    tokio::time::sleep(outage).await;
    Ok(())
}

async fn http_ok(url: &str) -> anyhow::Result<()> {
    static CLIENT: std::sync::LazyLock<reqwest::Client> = std::sync::LazyLock::new(|| {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client builds")
    });
    let response = CLIENT.get(url).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(())
}
