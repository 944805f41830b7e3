//! The performance benchmark harness; see `e2e_tests::bench`. Run it with `./dev bench`
//! (release build, the `./dev up` instance), or with the `REWARDS_TEST_*` variables of any
//! instance set (the CI smoke test does that with `--smoke`).

use clap::Parser;
use e2e_tests::bench::{Options, SCENARIOS, run};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Performance scenarios against a running instance"
)]
struct Args {
    /// Comma-separated scenarios (claims, saga, ingest, gateway, memory) or `all`.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Seconds of load per scenario.
    #[arg(long)]
    duration: Option<u64>,
    /// Concurrent clients of the claims and gateway scenarios.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Claims per second of the saga scenario.
    #[arg(long)]
    rate: Option<u64>,
    /// Activity records per second of the ingestion scenario.
    #[arg(long)]
    ingest_rate: Option<u64>,
    /// Requests per second at which the gateway scenario compares via and direct.
    #[arg(long)]
    gateway_rate: Option<u64>,
    /// Players of the claims scenario (default: duration x 700/s, at most 20000; a run
    /// ends early when they have all claimed).
    #[arg(long)]
    players: Option<usize>,
    /// Results go to DIR/<timestamp>/.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Seconds-long runs with tiny pools: checks the harness works, measures nothing.
    #[arg(long)]
    smoke: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let scenarios: Vec<String> = if args.scenario == "all" {
        SCENARIOS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scenario
            .split(',')
            .map(|s| s.trim().to_owned())
            .collect()
    };
    if let Some(unknown) = scenarios.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        eprintln!(
            "unknown scenario {unknown}: one of {} or all",
            SCENARIOS.join(", ")
        );
        return ExitCode::from(2);
    }
    let options = Options {
        scenarios,
        duration: args.duration.unwrap_or(if args.smoke { 1 } else { 10 }),
        concurrency: if args.smoke {
            args.concurrency.min(8)
        } else {
            args.concurrency
        },
        rate: args.rate.unwrap_or(if args.smoke { 20 } else { 500 }),
        ingest_rate: args
            .ingest_rate
            .unwrap_or(if args.smoke { 200 } else { 5_000 }),
        gateway_rate: args
            .gateway_rate
            .unwrap_or(if args.smoke { 50 } else { 5_000 }),
        players: args.players,
        out: args.out,
        smoke: args.smoke,
    };
    match run(options).await {
        Ok((_, true)) => ExitCode::SUCCESS,
        Ok((dir, false)) => {
            eprintln!(
                "some scenarios failed; see {}",
                dir.join("results.json").display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
