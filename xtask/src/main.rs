//! `./dev`: the one entry point for running the platform locally and testing it.
//!
//! ```text
//! ./dev up        install what is missing, build, start everything, wait until healthy
//!                 (`--cluster`: replicated MongoDB and Kafka, two of each stateful service)
//! ./dev status    what runs, where, healthy or not, how much memory
//! ./dev down      stop what `up` started (data kept); `--reset` also wipes the data
//! ./dev reset     same as `down --reset`
//! ./dev test      lints, then fresh infrastructure and services on free ports, all tests,
//!                 tear down
//! ./dev env       export lines pointing tests and tools at the `up` instance
//! ./dev bench     release build, then the benchmark harness against the `up` instance
//! ./dev chaos     faults under load on a fresh instance, then the invariants checked
//! ./dev logs X    follow the log of component X
//! ./dev topic T   print topic T's messages decoded to JSON through the registry
//! ```

mod component;
mod install;
mod layout;
mod stack;

use anyhow::Context;
use clap::{Parser, Subcommand};
use layout::{Home, InstanceDirs, workspace_root};
use stack::{Instance, InstanceKind, Ports, Topology};
use std::process::ExitCode;
use std::time::Instant;
use supervise::process;

#[derive(Parser)]
#[command(name = "./dev", about = "Run and test the reward platform locally")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install (first time), build, start infrastructure and services, wait until healthy.
    Up {
        /// Run the services from optimised release builds (for measurements).
        #[arg(long)]
        release: bool,
        /// A cluster: three MongoDB replica-set members, three Kafka nodes, two instances
        /// of auth, event and reward-fulfillment. Chosen when the instance is first made;
        /// later `up`s keep its shape.
        #[arg(long)]
        cluster: bool,
    },
    /// Stop what `up` started; data is kept unless --reset.
    Down {
        /// Also delete the instance's data and logs.
        #[arg(long)]
        reset: bool,
    },
    /// Stop everything and delete the instance's data and logs.
    Reset,
    /// Show each component: pid, port, health, memory. Exits 1 if any is not healthy.
    Status,
    /// Run the whole test suite against fresh infrastructure and services, then tear down.
    Test {
        /// Skip `cargo fmt --check` and clippy (quicker local iterations; CI never skips).
        #[arg(long)]
        no_lint: bool,
        /// Services and tests from release builds (benchmark figures without a `./dev up`).
        #[arg(long)]
        release: bool,
        /// Run the suite against a cluster instance (see `up --cluster`).
        #[arg(long)]
        cluster: bool,
        /// Skip the short chaos runs that follow the suite.
        #[arg(long)]
        no_chaos: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_args: Vec<String>,
    },
    /// Faults under load on a fresh instance of its own, then the invariants checked
    /// (`./dev chaos -- --help` lists the harness's flags: --duration, --seed, --faults, ...).
    Chaos {
        /// A cluster instance (see `up --cluster`); default single.
        #[arg(long)]
        cluster: bool,
        /// Services and the harness from release builds.
        #[arg(long)]
        release: bool,
        /// Arguments for the harness, e.g. `--duration 600 --random --seed 7`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print `export` lines that point `cargo test` and tools at the `up` instance.
    Env,
    /// Build release binaries and run the benchmark harness against the `up` instance
    /// (`./dev bench --help` after `--` lists its flags: --scenario, --duration, ...).
    Bench {
        /// Arguments for the harness, e.g. `--scenario claims,saga --duration 20`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Follow a component's log (mongod, kafka, schema-registry, or a service name).
    Logs { component: String },
    /// Print a topic's messages as JSON lines: partition, offset, key, headers and the value
    /// decoded through the schema registry. Reads the `up` instance unless told otherwise.
    Topic {
        topic: String,
        /// Only this partition.
        #[arg(long)]
        partition: Option<i32>,
        /// Only the last N messages of each partition.
        #[arg(long)]
        last: Option<i64>,
        /// Stop after N messages.
        #[arg(long)]
        limit: Option<usize>,
        /// Keep printing new messages as they arrive.
        #[arg(long, short)]
        follow: bool,
        /// Kafka bootstrap servers, instead of the `up` instance's.
        #[arg(long)]
        brokers: Option<String>,
        /// Schema registry URL (Confluent API), instead of the `up` instance's.
        #[arg(long)]
        registry: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Cmd) -> anyhow::Result<ExitCode> {
    let home = Home::from_env()?;
    let dev = || -> anyhow::Result<Instance> {
        Instance::open(
            &home,
            install::Tools::locate(&home),
            InstanceDirs::new(home.dev_instance()),
            Ports::standard(Topology::Single),
            InstanceKind::Dev,
        )
    };
    match command {
        Cmd::Up { release, cluster } => up(&home, release, cluster).await,
        Cmd::Down { reset } => down(&home, dev()?, reset),
        Cmd::Reset => down(&home, dev()?, true),
        Cmd::Status => {
            let (table, healthy) = dev()?.status().await;
            print!("{table}");
            Ok(if healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Test {
            no_lint,
            release,
            cluster,
            no_chaos,
            cargo_args,
        } => {
            let topology = Topology::of(cluster);
            test(&home, !no_lint, release, topology, !no_chaos, &cargo_args).await
        }
        Cmd::Chaos {
            cluster,
            release,
            args,
        } => {
            let tools = install::ensure_all(&home).await?;
            if release {
                cargo(&["build", "--release", "--workspace", "--bins"]).await?;
            }
            let private = Private {
                home: &home,
                tools: &tools,
                release,
            };
            let passed = private.chaos(Topology::of(cluster), &args).await?;
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Env => {
            for (key, value) in dev()?.test_env() {
                println!("export {key}='{value}'");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench { args } => bench(&home, dev()?, &args).await,
        Cmd::Topic {
            topic,
            partition,
            last,
            limit,
            follow,
            brokers,
            registry,
        } => {
            let options = messaging::inspect::InspectOptions {
                partition,
                last,
                limit,
                follow,
            };
            show_topic(dev()?, &topic, &options, brokers, registry).await
        }
        Cmd::Logs { component } => {
            let instance = dev()?;
            let known: Vec<String> = instance.components().iter().map(|c| c.name()).collect();
            anyhow::ensure!(
                known.contains(&component),
                "no component {component:?}; one of: {}",
                known.join(", ")
            );
            let log = instance.dirs.log(&component);
            let status = std::process::Command::new("tail")
                .arg("-F")
                .arg(&log)
                .status()
                .with_context(|| format!("tail -F {}", log.display()))?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

async fn up(home: &Home, release: bool, cluster: bool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    // ./dev has built the workspace (debug) before running this tool.
    let tools = install::ensure_all(home).await?;
    if release {
        cargo(&["build", "--release", "--workspace", "--bins"]).await?;
    }
    let wanted = Topology::of(cluster);
    let mut instance = Instance::open(
        home,
        tools,
        InstanceDirs::new(home.dev_instance()),
        Ports::standard(wanted),
        InstanceKind::Dev,
    )?;
    // Without --cluster, an instance made as a cluster stays one.
    if cluster {
        stack::ensure_topology(&instance, Topology::Cluster)?;
    }
    instance.release = release;
    instance.start().await?;
    let (table, _) = instance.status().await;
    println!("\n{table}");
    println!("logs:   {}", instance.dirs.logs().display());
    println!("data:   {}", instance.dirs.root.join("data").display());
    println!("public API: {}", instance.service_url("gateway"));
    println!(
        "admin:  {} (password in {})",
        instance.secrets.admin_email,
        instance.dirs.root.join("secrets.json").display()
    );
    println!("up in {:.1?}", started.elapsed());
    Ok(ExitCode::SUCCESS)
}

/// Runs the harness (a release build) against the `up` instance, which it finds through
/// the same variables `./dev env` prints. Refuses when the instance is not up and healthy:
/// figures from a half-started instance would mislead.
async fn bench(home: &Home, instance: Instance, args: &[String]) -> anyhow::Result<ExitCode> {
    let (table, healthy) = instance.status().await;
    anyhow::ensure!(
        healthy,
        "the `./dev up` instance is not running (or not healthy); start it with \
         `./dev up --release` first.\n{table}"
    );
    // The harness and game-sim (its activity load generator) sit side by side here.
    cargo(&["build", "--release", "--workspace", "--bins"]).await?;
    let harness = home.target_dir().join("release").join("bench");
    let status = tokio::select! {
        status = tokio::process::Command::new(&harness)
            .kill_on_drop(true)
            .args(args)
            .envs(instance.test_env())
            .current_dir(workspace_root())
            .status() => status.with_context(|| format!("running {}", harness.display()))?,
        signal = interrupted() => anyhow::bail!("interrupted by {signal}"),
    };
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn down(home: &Home, instance: Instance, reset: bool) -> anyhow::Result<ExitCode> {
    instance.stop();
    if reset {
        std::fs::remove_dir_all(home.dev_instance()).or_else(ignore_missing)?;
        println!("removed {}", home.dev_instance().display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the suite against an instance of its own: fresh data on tmpfs, free ports. Then,
/// unless told otherwise or given a test filter, the short chaos runs of CI: each on a fresh
/// instance of its topology (single, then cluster; only cluster with `--cluster`).
async fn test(
    home: &Home,
    lint: bool,
    release: bool,
    topology: Topology,
    chaos: bool,
    cargo_args: &[String],
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    remove_abandoned_test_instances();
    if lint {
        cargo(&["fmt", "--all", "--check"]).await?;
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ])
        .await?;
    }
    let tools = install::ensure_all(home).await?;
    if release {
        cargo(&["build", "--release", "--workspace", "--bins"]).await?;
    }
    let private = Private {
        home,
        tools: &tools,
        release,
    };
    let suite = private
        .run(topology, "test", &home.last_test_logs(), async |instance| {
            println!("test instance ready after {:.1?}", started.elapsed());
            // Every test binary runs even when one fails: one run reports every failure.
            let mut args = vec!["test".into(), "--workspace".into(), "--no-fail-fast".into()];
            if release {
                args.push("--release".into());
            }
            args.extend(cargo_args.iter().cloned());
            let status = tokio::select! {
                status = cargo_command()
                    .kill_on_drop(true)
                    .args(&args)
                    .envs(instance.test_env())
                    .current_dir(workspace_root())
                    .status() => status.context("running cargo test")?,
                signal = interrupted() => anyhow::bail!("interrupted by {signal}"),
            };
            // The OpenAPI contract, checked from outside by a fuzzer; not with a test filter.
            let contract = cargo_args.is_empty() && contract(instance).await?;
            Ok(status.success() && (contract || !cargo_args.is_empty()))
        })
        .await?;
    let mut passed = suite;
    if chaos && cargo_args.is_empty() {
        let topologies: &[Topology] = match topology {
            Topology::Single => &[Topology::Single, Topology::Cluster],
            Topology::Cluster => &[Topology::Cluster],
        };
        for &topology in topologies {
            let args = ci_chaos_args(topology);
            passed &= private.chaos(topology, &args).await?;
        }
    }
    println!("test command took {:.1?}", started.elapsed());
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `tests/contract/run` (schemathesis, once per role) against `instance`; its JUnit
/// reports are kept with the instance's logs.
async fn contract(instance: &Instance) -> anyhow::Result<bool> {
    let started = Instant::now();
    let script = workspace_root().join("tests/contract/run");
    let report = instance.dirs.logs().join("contract");
    let status = tokio::select! {
        status = tokio::process::Command::new(&script)
            .kill_on_drop(true)
            .arg("--report-dir")
            .arg(&report)
            .envs(instance.test_env())
            .status() => status.with_context(|| format!("running {}", script.display()))?,
        signal = interrupted() => anyhow::bail!("interrupted by {signal}"),
    };
    println!("contract checks took {:.1?}", started.elapsed());
    Ok(status.success())
}

/// The short chaos run CI makes in each topology: a fixed seed; in a single instance the
/// only broker and the only mongod killed, in a cluster the busiest broker killed, the
/// primary stepped down and an event instance killed (the gateway must route around it).
fn ci_chaos_args(topology: Topology) -> Vec<String> {
    let faults = match topology {
        Topology::Single => "broker-kill,primary-kill",
        Topology::Cluster => "broker-kill,primary-stepdown,service-kill",
    };
    [
        "--duration",
        "60",
        "--seed",
        "20261202",
        "--players",
        "40",
        "--faults",
        faults,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Instances of their own for a test or chaos run: fresh data on tmpfs, free ports, torn
/// down afterwards with their logs kept.
struct Private<'a> {
    home: &'a Home,
    tools: &'a install::Tools,
    release: bool,
}

impl Private<'_> {
    /// Starts a fresh instance of `topology`, runs `body` against it, stops it (whatever
    /// happened) and keeps its logs in `kept`.
    async fn run(
        &self,
        topology: Topology,
        label: &str,
        kept: &std::path::Path,
        body: impl AsyncFnOnce(&Instance) -> anyhow::Result<bool>,
    ) -> anyhow::Result<bool> {
        let root = test_instance_root(self.home, label);
        let mut instance = Instance::open(
            self.home,
            self.tools.clone(),
            InstanceDirs::new(root.clone()),
            Ports::free(topology)?,
            InstanceKind::Test,
        )?;
        instance.release = self.release;
        let outcome = async {
            instance.start().await?;
            body(&instance).await
        }
        .await;
        instance.stop();
        let _ = std::fs::remove_dir_all(kept);
        copy_dir(&instance.dirs.logs(), kept)?;
        std::fs::remove_dir_all(&root).or_else(ignore_missing)?;
        println!("logs of this run: {}", kept.display());
        outcome
    }

    /// The chaos harness against a fresh instance of `topology`; its report is kept with the
    /// logs (`<REWARDS_HOME>/run/last-chaos-<topology>/report.json`).
    async fn chaos(&self, topology: Topology, args: &[String]) -> anyhow::Result<bool> {
        let started = Instant::now();
        let kept = self
            .home
            .root()
            .join(format!("run/last-chaos-{}", topology.name()));
        let profile = if self.release { "release" } else { "debug" };
        let harness = self.home.target_dir().join(profile).join("chaos");
        let label = format!("chaos-{}", topology.name());
        let passed = self
            .run(topology, &label, &kept, async |instance| {
                println!(
                    "chaos: {} instance ready after {:.1?}",
                    topology.name(),
                    started.elapsed()
                );
                let report = instance.dirs.logs().join("report.json");
                let status = tokio::select! {
                    status = tokio::process::Command::new(&harness)
                        .kill_on_drop(true)
                        .args(args)
                        .arg("--report")
                        .arg(&report)
                        .envs(instance.test_env())
                        .current_dir(workspace_root())
                        .status() => status.with_context(|| format!("running {}", harness.display()))?,
                    signal = interrupted() => anyhow::bail!("interrupted by {signal}"),
                };
                Ok(status.success())
            })
            .await?;
        println!(
            "chaos ({}) {} in {:.1?}",
            topology.name(),
            if passed { "passed" } else { "FAILED" },
            started.elapsed()
        );
        Ok(passed)
    }
}

/// Resolves on SIGINT (ctrl-c) or SIGTERM (a CI runner's timeout), so the test instance is
/// still torn down.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Test instances live on tmpfs when there is one, named after the tool's pid and their use.
fn test_instance_root(home: &Home, label: &str) -> std::path::PathBuf {
    let name = format!("reward-platform-test-{}-{label}", std::process::id());
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join(name)
    } else {
        home.root().join("run").join(name)
    }
}

/// A test run that was killed (CI timeout, kill -9) leaves its processes and tmpfs data
/// behind; the next run stops and removes them.
fn remove_abandoned_test_instances() {
    let Ok(entries) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("reward-platform-test-") else {
            continue;
        };
        let owner = rest.split('-').next().unwrap_or_default();
        if owner.parse().is_ok_and(process::is_alive) {
            continue;
        }
        let pids = entry.path().join("pids");
        // With the trailing slash: `...-12/` must not match a live `...-123`.
        let marker = format!("{}/", entry.path().display());
        for pid_file in std::fs::read_dir(&pids).into_iter().flatten().flatten() {
            if let Some(pid) = process::running(&pid_file.path(), &marker) {
                process::stop(pid, std::time::Duration::from_secs(10));
            }
        }
        let _ = std::fs::remove_dir_all(entry.path());
        println!("removed abandoned test instance {name}");
    }
}

async fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = cargo_command()
        .args(args)
        .current_dir(workspace_root())
        .status()
        .await
        .context("running cargo")?;
    anyhow::ensure!(status.success(), "cargo {} failed", args.join(" "));
    Ok(())
}

/// A cargo invocation without the package variables `cargo run` gave this tool: build
/// scripts (ring's) watch some of them, and seeing them change would rebuild those crates on
/// every alternation between `cargo run -p xtask` and a workspace build.
fn cargo_command() -> tokio::process::Command {
    let mut command =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&&*key)
        {
            command.env_remove(&*key);
        }
    }
    command
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// `./dev topic`: one JSON line per message on stdout, a count on stderr.
async fn show_topic(
    instance: Instance,
    topic: &str,
    options: &messaging::inspect::InspectOptions,
    brokers: Option<String>,
    registry: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut kafka = instance.kafka_config();
    if let Some(brokers) = brokers {
        kafka.brokers = brokers;
    }
    let registry = messaging::SchemaRegistry::new(&service_config::RegistryConfig {
        url: registry.unwrap_or_else(|| instance.registry_url()),
    })?;
    let shown = messaging::inspect::inspect(&kafka, &registry, topic, options, |message| {
        use std::io::Write;
        // A closed pipe (`./dev topic t | head`) ends the listing, quietly.
        if writeln!(std::io::stdout(), "{message}").is_err() {
            std::process::exit(0);
        }
    })
    .await?;
    eprintln!("{shown} message(s) from {topic}");
    Ok(ExitCode::SUCCESS)
}
