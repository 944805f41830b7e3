//! The command line: the service (default), and the `load` and `scenario` tools.

use crate::Config;
use crate::load::{self, LoadOptions};
use crate::scenario::{self, ScenarioOptions};
use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

/// A simulated game server producing players' activity (UserActivityEvent) to Kafka.
///
/// Without a subcommand it runs as a service (health and metrics over HTTP). Kafka and the
/// schema registry come from the usual configuration (defaults, the TOML file named by
/// REWARDS_CONFIG_FILE, then REWARDS_KAFKA__BROKERS / REWARDS_REGISTRY__URL); `--brokers`
/// and `--registry` override them.
#[derive(Debug, Parser)]
#[command(name = "game-sim", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a service (the default).
    Serve,
    /// Produce simulated players' activity at a given rate, for load tests.
    Load(LoadArgs),
    /// Make one user meet one event's condition, through the gateway and Kafka.
    Scenario(ScenarioArgs),
}

#[derive(Debug, Args)]
pub struct Connection {
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Schema registry base URL (its Confluent-compatible API).
    #[arg(long)]
    pub registry: Option<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Simulated players, named <user-prefix>1 .. <user-prefix>N.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Records per second in all; 0 is as fast as possible.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// How long to produce, in seconds (fractions allowed).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long, default_value = "sim-")]
    pub user_prefix: String,
    /// Seed of the activity mix (which player does what), for reproducible runs. Message ids
    /// are always fresh.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the summary as one JSON line on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// The event whose condition to meet.
    #[arg(long)]
    pub event: String,
    /// The player's account.
    #[arg(long)]
    pub email: String,
    #[arg(long, env = "GAME_SIM_PASSWORD", hide_env_values = true)]
    pub password: String,
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub gateway: String,
    /// Wait up to this many seconds for the event service to report the condition met.
    #[arg(long)]
    pub wait: Option<f64>,
    #[command(flatten)]
    pub connection: Connection,
}

fn config(connection: &Connection, client_id: &str) -> anyhow::Result<Config> {
    let mut config: Config = service_config::load()?;
    if let Some(brokers) = &connection.brokers {
        config.kafka.brokers = brokers.clone();
    }
    if let Some(url) = &connection.registry {
        config.registry.url = url.clone();
    }
    config.kafka.client_id = client_id.to_owned();
    Ok(config)
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("{flag} {value} is not a duration in seconds"))
}

/// Runs what the command line asks for.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config: Config = service_config::load()?;
            let _logs = telemetry::init_logging(&config.log);
            crate::Application::build(config)
                .await?
                .run_until_stopped()
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Load(args) => {
            let config = config(&args.connection, "game-sim-load")?;
            let options = LoadOptions {
                users: args.users,
                rate: args.rate,
                duration: seconds(args.duration, "--duration")?,
                user_prefix: args.user_prefix,
                seed: args.seed,
                progress: !args.quiet,
            };
            let summary = load::run(&config.kafka, &config.registry, options).await?;
            eprintln!("{}", summary.human());
            if args.json {
                println!("{}", serde_json::to_string(&summary)?);
            }
            Ok(if summary.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Scenario(args) => {
            let config = config(&args.connection, "game-sim-scenario")?;
            let options = ScenarioOptions {
                event_id: args.event,
                email: args.email,
                password: args.password,
                gateway: args.gateway,
                wait: args.wait.map(|w| seconds(w, "--wait")).transpose()?,
            };
            scenario::run(&config.kafka, &config.registry, options).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_parses() {
        Cli::try_parse_from(["game-sim"]).unwrap();
        Cli::try_parse_from(["game-sim", "serve"]).unwrap();
        let cli = Cli::try_parse_from([
            "game-sim",
            "load",
            "--users",
            "5",
            "--rate",
            "0",
            "--duration",
            "2.5",
            "--json",
            "--user-prefix",
            "x-",
            "--seed",
            "3",
            "--brokers",
            "b:1",
            "--registry",
            "http://r",
        ])
        .unwrap();
        let Some(Command::Load(load)) = cli.command else {
            panic!("not load")
        };
        assert_eq!((load.users, load.rate, load.duration), (5, 0, 2.5));
        assert_eq!(load.connection.brokers.as_deref(), Some("b:1"));
        let cli = Cli::try_parse_from([
            "game-sim",
            "scenario",
            "--event",
            "e1",
            "--email",
            "a@b.c",
            "--password",
            "pw",
            "--wait",
            "30",
        ])
        .unwrap();
        let Some(Command::Scenario(scenario)) = cli.command else {
            panic!("not scenario")
        };
        assert_eq!(scenario.gateway, "http://127.0.0.1:3000");
        assert_eq!(scenario.wait, Some(30.0));
    }
}
