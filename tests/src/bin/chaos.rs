//! The fault-injection harness; see `e2e_tests::chaos`. Run it with `./dev chaos`, which
//! starts a fresh instance (single or `--cluster`) for it, or with the `REWARDS_TEST_*`
//! variables of any running instance set.

use clap::Parser;
use e2e_tests::chaos::faults::FaultKind;
use e2e_tests::chaos::{Options, run};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    about = "Faults injected under load, then the invariants checked"
)]
struct Args {
    /// Seconds of load; the faults are spread over it.
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Seeds the load's choices and, with --random, the faults (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// The faults, comma-separated, injected in this order (default: every kind).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<FaultKind>,
    /// Draw the faults from --faults (or every kind) and the gaps between them from the
    /// seed, until the duration is used up.
    #[arg(long)]
    random: bool,
    /// Players signed up for the run.
    #[arg(long, default_value_t = 60)]
    players: usize,
    /// Claims per second, all players together.
    #[arg(long, default_value_t = 20.0)]
    claim_rate: f64,
    /// Activity records per second.
    #[arg(long, default_value_t = 200.0)]
    activity_rate: f64,
    /// Where the JSON report goes.
    #[arg(long, default_value = "chaos-report.json")]
    report: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let faults = if args.faults.is_empty() {
        FaultKind::ALL.to_vec()
    } else {
        args.faults
    };
    let options = Options {
        duration: args.duration,
        seed,
        faults,
        random: args.random,
        players: args.players,
        claim_rate: args.claim_rate,
        activity_rate: args.activity_rate,
        report: args.report,
    };
    match run(options).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("[chaos] an invariant was violated");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("[chaos] error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
