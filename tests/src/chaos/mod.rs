//! The fault-injection harness (`chaos` binary, `./dev chaos`): a mixed load on a running
//! instance while its brokers, replica-set members, services and registry are killed,
//! frozen and stepped down, then the invariants that must survive all of it.
//!
//! A run: sign up players and make an event with rewards (some of limited stock) through
//! the API; start the load ([`load`]); inject the faults one after another, on a schedule
//! or drawn from the seed ([`faults`]); stop the load, wait for the instance to quiesce
//! (every component healthy, claims settled, outboxes drained, activity counted); check
//! the invariants ([`invariants`]); print the report and write it as JSON. The exit code
//! says whether every invariant held.

pub mod faults;
pub mod invariants;
pub mod journal;
pub mod load;
pub mod setup;

use faults::{FaultKind, FaultRecord, Injector};
use invariants::{Check, Databases};
use journal::{ClaimEnd, Journal};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use supervise::manifest::Manifest;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds of load; faults are spread over it.
    pub duration: u64,
    pub seed: u64,
    /// The faults, in order (`random`: the kinds to draw from).
    pub faults: Vec<FaultKind>,
    /// Draw faults and the gaps between them from the seed, until the duration is used up.
    pub random: bool,
    pub players: usize,
    pub claim_rate: f64,
    pub activity_rate: f64,
    pub report: PathBuf,
}

/// How long after the load stops the instance has to settle every claim.
const SETTLE_WITHIN: Duration = Duration::from_secs(60);

pub async fn run(options: Options) -> anyhow::Result<bool> {
    let root = instance_root();
    let manifest = Manifest::load(&root)?;
    let topology = manifest.topology.clone();
    eprintln!(
        "[chaos] {topology} instance at {}, seed {}, {} s of load",
        root.display(),
        options.seed,
        options.duration
    );
    let journal = Arc::new(Journal::new(topology == "cluster"));
    let setup = Arc::new(setup::Setup::new(options.players).await?);
    let dbs = Databases::connect().await?;
    let game = Arc::new(load::Game::connect()?);
    let mut users: Vec<String> = setup.players.iter().map(|p| p.id.clone()).collect();
    users.extend(setup.probers.iter().map(|p| p.id.clone()));
    game.prime(&journal, &users).await;
    wait_counted(&setup, &journal, &dbs, Duration::from_secs(120)).await?;
    game.poison(&journal, 3).await;
    eprintln!(
        "[chaos] {:>6.1}s {} players eligible; load starts",
        journal.now(),
        users.len()
    );

    let stop = CancellationToken::new();
    let load = start_load(&options, &setup, &journal, &game, users, &stop);
    let load_started = journal.now();
    let mut injector = Injector::new(manifest.clone())?;
    let (records, fault_errors) = inject_all(&options, &mut injector, &journal, load_started).await;
    let load_ends = load_started + options.duration as f64;
    let end_of_faults = records.last().map_or(0.0, |r| r.settled_at + 10.0);
    let remaining = load_ends.max(end_of_faults) - journal.now();
    tokio::time::sleep(Duration::from_secs_f64(remaining.max(0.0))).await;
    stop.cancel();
    futures::future::join_all(load).await;
    let load_secs = journal.now() - load_started;
    eprintln!(
        "[chaos] {:>6.1}s load stopped; waiting for quiescence",
        journal.now()
    );

    let quiet = quiesce(&injector, &manifest, &setup, &journal, &dbs).await;
    let records = with_recovery(records, &journal);
    let mut checks = invariants::check(&setup, &journal, &dbs).await?;
    checks.extend(invariants::during_faults(injector.single(), &records));
    if let Err(e) = &quiet {
        checks.push(Check {
            name: "the instance quiesced",
            ok: false,
            detail: format!("{e:#}"),
        });
    }
    for error in &fault_errors {
        checks.push(Check {
            name: "every fault was injected and healed",
            ok: false,
            detail: error.clone(),
        });
    }
    let report = report(
        &options,
        &topology,
        &records,
        &checks,
        &journal,
        &manifest,
        load_secs,
        quiet.ok(),
    );
    print_report(&report);
    std::fs::write(&options.report, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("[chaos] report written to {}", options.report.display());
    Ok(checks.iter().all(|c| c.ok))
}

/// The instance's directory: the parent of the config directory `./dev` exports.
fn instance_root() -> PathBuf {
    let config = PathBuf::from(test_support::required(test_support::CONFIG_DIR));
    config.parent().map(PathBuf::from).unwrap_or(config)
}

fn start_load(
    options: &Options,
    setup: &Arc<setup::Setup>,
    journal: &Arc<Journal>,
    game: &Arc<load::Game>,
    users: Vec<String>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let duration = options.duration as f64;
    let per_round = (options.players / 50).max(1);
    vec![
        tokio::spawn(load::claims(
            setup.clone(),
            journal.clone(),
            options.claim_rate,
            16,
            options.seed,
            stop.clone(),
        )),
        tokio::spawn(game.clone().run(
            Arc::new(users),
            journal.clone(),
            options.activity_rate,
            options.seed,
            stop.clone(),
        )),
        tokio::spawn(load::probes(setup.clone(), journal.clone(), stop.clone())),
        tokio::spawn(load::bans(
            setup.clone(),
            journal.clone(),
            vec![duration / 3.0, 2.0 * duration / 3.0],
            per_round,
            options.seed,
            stop.clone(),
        )),
    ]
}

/// The faults, one after the other: at their scheduled times, or at gaps drawn from the
/// seed. A fault that cannot be injected is reported and the run goes on.
async fn inject_all(
    options: &Options,
    injector: &mut Injector,
    journal: &Journal,
    load_started: f64,
) -> (Vec<FaultRecord>, Vec<String>) {
    let duration = options.duration as f64;
    let warmup = (duration * 0.1).max(5.0);
    let mut rng = StdRng::seed_from_u64(options.seed ^ 0xfa17);
    let plan: Vec<(f64, FaultKind)> = if options.random {
        let mut at = warmup;
        let mut plan = Vec::new();
        while at < duration - 20.0 && !options.faults.is_empty() {
            plan.push((
                at,
                options.faults[rng.random_range(0..options.faults.len())],
            ));
            at += rng.random_range(5.0..20.0) + 20.0;
        }
        plan
    } else {
        let slot = (duration - warmup) / options.faults.len().max(1) as f64;
        options
            .faults
            .iter()
            .enumerate()
            .map(|(i, kind)| (warmup + i as f64 * slot, *kind))
            .collect()
    };
    let mut records = Vec::new();
    let mut errors = Vec::new();
    let clock = || journal.now();
    for (at, kind) in plan {
        let wait = load_started + at - journal.now();
        tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
        match injector.inject(kind, &clock).await {
            Ok(record) => {
                // The next fault waits for this one's effect to end: a claim made after it
                // succeeded (or two minutes passed).
                wait_recovered(journal, record.injected_at, Duration::from_secs(120)).await;
                records.push(record);
            }
            Err(e) => {
                eprintln!("[chaos] {} failed: {e:#}", kind.name());
                errors.push(format!("{}: {e:#}", kind.name()));
            }
        }
    }
    (records, errors)
}

async fn wait_recovered(journal: &Journal, since: f64, within: Duration) {
    let give_up = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < give_up {
        if journal.first_success_since(since).is_some() {
            eprintln!("[chaos] {:>6.1}s claims succeed again", journal.now());
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until every player's first quest is counted (they then meet the condition).
async fn wait_counted(
    setup: &setup::Setup,
    journal: &Journal,
    dbs: &Databases,
    within: Duration,
) -> anyhow::Result<()> {
    let give_up = tokio::time::Instant::now() + within;
    let wanted = journal.activity();
    loop {
        let counted = dbs.quests(&setup.event).await?;
        let missing = wanted
            .keys()
            .filter(|u| counted.get(*u).copied().unwrap_or(0) < 1)
            .count();
        if missing == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < give_up,
            "{missing} players' first quest not counted within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every component healthy and whole, then (within [`SETTLE_WITHIN`]) no claim PENDING, every
/// outbox drained and every delivered activity id counted. Returns how long it took.
async fn quiesce(
    injector: &Injector,
    manifest: &Manifest,
    setup: &setup::Setup,
    journal: &Journal,
    dbs: &Databases,
) -> anyhow::Result<f64> {
    let started = journal.now();
    for member in &manifest.members {
        injector.settle(member).await?;
    }
    let healthy = journal.now();
    let give_up = tokio::time::Instant::now() + SETTLE_WITHIN;
    let produced = journal.activity();
    loop {
        let pending = dbs.pending(&setup.event).await?;
        let unpublished: u64 = dbs
            .unpublished(journal.started_at)
            .await?
            .iter()
            .map(|(_, n)| n)
            .sum();
        let counted = dbs.quests(&setup.event).await?;
        let behind = produced
            .iter()
            .filter(|(u, ids)| counted.get(*u).copied().unwrap_or(0) < ids.len() as i64)
            .count();
        if pending == 0 && unpublished == 0 && behind == 0 {
            let took = journal.now() - started;
            eprintln!(
                "[chaos] {:>6.1}s quiet: healthy after {:.1}s, settled {:.1}s later",
                journal.now(),
                healthy - started,
                journal.now() - healthy
            );
            return Ok(took);
        }
        if tokio::time::Instant::now() >= give_up {
            anyhow::bail!(
                "{:?} after every component was healthy: {pending} claims PENDING, \
                 {unpublished} outbox entries unpublished, {behind} players' activity not \
                 all counted",
                SETTLE_WITHIN
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Each fault's recovery (from its injection to the first probe sent after it that
/// succeeded), and what clients saw while it lasted.
fn with_recovery(mut records: Vec<FaultRecord>, journal: &Journal) -> Vec<FaultRecord> {
    let probes = journal.probes();
    for record in &mut records {
        let broken = record.injected_at..=record.healed_at;
        record.answers_during = journal.answers_between(record.injected_at, record.healed_at);
        record.succeeded_during = probes
            .iter()
            .filter(|p| broken.contains(&p.sent_at))
            .filter(|p| p.succeeded_at.is_some_and(|at| at <= record.healed_at))
            .count();
        record.recovered_after = journal
            .first_success_since(record.injected_at)
            .map(|at| at - record.injected_at);
    }
    records
}

#[allow(clippy::too_many_arguments)]
fn report(
    options: &Options,
    topology: &str,
    faults: &[FaultRecord],
    checks: &[Check],
    journal: &Journal,
    manifest: &Manifest,
    load_secs: f64,
    quiesced_after: Option<f64>,
) -> Value {
    let mut accepted = 0;
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    for claim in journal.claims() {
        match claim.end {
            ClaimEnd::Accepted { .. } => accepted += 1,
            ClaimEnd::Refused { code } => *refused.entry(code).or_default() += 1,
            ClaimEnd::Failed { code } => *failed.entry(code).or_default() += 1,
        }
    }
    let mut by_kind: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for fault in faults {
        by_kind
            .entry(fault.kind.name())
            .or_default()
            .extend(fault.recovered_after);
    }
    let recovery: BTreeMap<&str, Value> = by_kind
        .into_iter()
        .map(|(kind, mut times)| {
            times.sort_by(f64::total_cmp);
            // Nearest rank: the smallest time at least half of them are within.
            let p50 = times
                .get(times.len().div_ceil(2).saturating_sub(1))
                .copied();
            let max = times.last().copied();
            (
                kind,
                json!({ "faults": times.len(), "p50_s": p50, "max_s": max }),
            )
        })
        .collect();
    let memory: BTreeMap<String, f64> = manifest
        .members
        .iter()
        .filter_map(|m| Some((m.name.clone(), crate::bench::procs::rss_mib(m.pid()?)?)))
        .collect();
    let activity: usize = journal.activity().values().map(|ids| ids.len()).sum();
    json!({
        "topology": topology,
        "seed": options.seed,
        "duration_s": options.duration,
        "load_s": load_secs,
        "schedule": if options.random { "random" } else { "fixed" },
        "faults": faults,
        "recovery": recovery,
        "claims": {
            "accepted": accepted,
            "refused": refused,
            "failed": failed,
            "rate_per_s": journal.claims().len() as f64 / load_secs.max(1.0),
        },
        "answers": journal.answers(),
        "activity": { "ids": activity, "duplicates_sent": journal.duplicates_sent() },
        "bans": journal.banned().len(),
        "quiesced_after_s": quiesced_after,
        "invariants": checks,
        "probes": journal.probes(),
        "memory_mib": { "total": memory.values().sum::<f64>(), "by_component": memory },
    })
}

fn print_report(report: &Value) {
    println!(
        "\nchaos run: {} topology, seed {}, {:.0} s of load",
        report["topology"].as_str().unwrap_or(""),
        report["seed"],
        report["load_s"].as_f64().unwrap_or(0.0)
    );
    println!(
        "\n{:<18} {:<22} {:>9} {:>9} {:>10}",
        "FAULT", "TARGET", "AT s", "SETTLED", "RECOVERED"
    );
    for fault in report["faults"].as_array().into_iter().flatten() {
        let at = fault["injected_at"].as_f64().unwrap_or(0.0);
        println!(
            "{:<18} {:<22} {:>9.1} {:>8.1}s {:>10}",
            fault["kind"].as_str().unwrap_or(""),
            fault["target"].as_str().unwrap_or(""),
            at,
            fault["settled_at"].as_f64().unwrap_or(0.0) - at,
            fault["recovered_after"]
                .as_f64()
                .map_or("never".into(), |s| format!("{s:.1}s")),
        );
    }
    let claims = &report["claims"];
    println!(
        "\nclaims: {} accepted, refused {}, failed {} ({:.1}/s)",
        claims["accepted"],
        claims["refused"],
        claims["failed"],
        claims["rate_per_s"].as_f64().unwrap_or(0.0)
    );
    println!("answers: {}", report["answers"]);
    println!(
        "activity: {} ids, {} duplicates sent; {} players banned; memory {:.0} MiB",
        report["activity"]["ids"],
        report["activity"]["duplicates_sent"],
        report["bans"],
        report["memory_mib"]["total"].as_f64().unwrap_or(0.0)
    );
    println!("\n{:<4} {:<74} DETAIL", "OK", "INVARIANT");
    for check in report["invariants"].as_array().into_iter().flatten() {
        println!(
            "{:<4} {:<74} {}",
            if check["ok"] == true { "yes" } else { "NO" },
            check["name"].as_str().unwrap_or(""),
            check["detail"].as_str().unwrap_or("")
        );
    }
}
