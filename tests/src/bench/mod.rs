//! The performance benchmark harness (`bench` binary, `./dev bench`): prepares data through
//! the public API, runs the scenarios of the performance issue against a running instance,
//! and reports latency, rate, errors, CPU and memory per process, as a table, as JSON and
//! as SVG plots. Timing is reported, never asserted: the CI smoke run only proves the
//! harness still works.

pub mod measure;
pub mod output;
pub mod prepare;
pub mod procs;
pub mod scenarios;

use measure::{Recorder, Second};
use mongo_kit::mongodb::bson::doc;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

pub const SCENARIOS: &[&str] = &["claims", "saga", "ingest", "gateway", "memory"];

#[derive(Debug, Clone)]
pub struct Options {
    pub scenarios: Vec<String>,
    /// Seconds of load per scenario (the gateway scenario runs it twice: via and direct).
    pub duration: u64,
    /// Clients of the closed-loop scenarios (claims, gateway).
    pub concurrency: usize,
    /// Claims per second of the saga scenario.
    pub rate: u64,
    /// Activity records per second of the ingestion scenario.
    pub ingest_rate: u64,
    /// Requests per second of the gateway scenario's equal-load comparison.
    pub gateway_rate: u64,
    /// Players of the claims scenario, instead of duration x the expected rate.
    pub players: Option<usize>,
    /// Where `<timestamp>/` with results.json and plots goes.
    pub out: PathBuf,
    /// Tiny pools and seconds-long runs: proves the harness works, measures nothing.
    pub smoke: bool,
}

/// One row of the table: a scenario's figures (JSON), its per-second series and notes.
pub struct ScenarioResult {
    pub name: String,
    pub figures: Value,
    pub series: Vec<Second>,
}

impl ScenarioResult {
    pub fn new(name: &str, recorder: &Recorder, took: Duration, notes: Vec<String>) -> Self {
        let mut figures = recorder.summary(took);
        figures["name"] = json!(name);
        figures["notes"] = json!(notes);
        figures["percentiles_ms"] = json!(recorder.percentiles());
        Self {
            name: name.to_owned(),
            figures,
            series: recorder.series(),
        }
    }

    fn failed(name: &str, error: &anyhow::Error) -> Self {
        Self {
            name: name.to_owned(),
            figures: json!({ "name": name, "error": format!("{error:#}"), "notes": [format!("FAILED: {error:#}")] }),
            series: Vec::new(),
        }
    }
}

/// Runs the selected scenarios; returns the results folder and whether all of them ran.
pub async fn run(options: Options) -> anyhow::Result<(PathBuf, bool)> {
    let config_dir = PathBuf::from(test_support::required(test_support::CONFIG_DIR));
    let processes = procs::instance_processes(&config_dir);
    anyhow::ensure!(
        !processes.is_empty(),
        "no running processes found from the pid files next to {}",
        config_dir.display()
    );
    // Before anything else touches the instance: the idle footprint.
    let idle: Vec<(String, f64)> = processes
        .iter()
        .map(|p| (p.name.clone(), procs::rss_mib(p.pid).unwrap_or(0.0)))
        .collect();

    let setup = prepare::Setup::new(processes.clone()).await?;
    let context = json!({
        "commit": commit(),
        "mongo_placement": mongo_placement(&setup.event_db.client().database("admin")).await,
        "machine": machine(),
        "started_at": mongo_kit::mongodb::bson::DateTime::now().try_to_rfc3339_string()?,
        "options": {
            "scenarios": options.scenarios, "duration_secs": options.duration,
            "concurrency": options.concurrency, "rate": options.rate,
            "ingest_rate": options.ingest_rate, "gateway_rate": options.gateway_rate,
            "smoke": options.smoke,
            "players": options.players,
        },
        "event": setup.event,
    });
    eprintln!(
        "[bench] commit {} MongoDB on {}",
        context["commit"].as_str().unwrap_or("?"),
        context["mongo_placement"].as_str().unwrap_or("?")
    );

    let mut results: Vec<ScenarioResult> = Vec::new();
    let mut peaks: Vec<f64> = idle.iter().map(|(_, rss)| *rss).collect();
    let mut all_ran = true;
    for name in options.scenarios.iter().filter(|s| *s != "memory") {
        eprintln!("[bench] scenario {name}");
        let outcome = match name.as_str() {
            "claims" => scenarios::claims(&setup, &options).await.map(|r| vec![r]),
            "saga" => scenarios::saga(&setup, &options).await,
            "ingest" => scenarios::ingest(&setup, &options).await.map(|r| vec![r]),
            "gateway" => scenarios::gateway(&setup, &options).await,
            other => Err(anyhow::anyhow!("unknown scenario {other}")),
        };
        match outcome {
            Ok(rows) => {
                for row in rows {
                    // Samples cover each scenario's load only, so peaks are "under the loads".
                    for (i, usage) in row.figures["processes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        if let Some(peak) = peaks.get_mut(i) {
                            *peak = peak.max(usage["rss_mib_max"].as_f64().unwrap_or(0.0));
                        }
                    }
                    results.push(row);
                }
            }
            Err(e) => {
                eprintln!("[bench] scenario {name} failed: {e:#}");
                all_ran = false;
                results.push(ScenarioResult::failed(name, &e));
            }
        }
    }
    // Ended, so that later runs' activity is not folded into every earlier run's event too.
    crate::saga::set_status(&setup.gateway, &setup.operator, &setup.event, "ENDED").await;
    if options.scenarios.iter().any(|s| s == "memory") {
        let rows: Vec<Value> = idle
            .iter()
            .zip(&peaks)
            .map(|((name, idle), peak)| json!({ "name": name, "rss_mib_idle": idle, "rss_mib_peak": peak }))
            .collect();
        results.push(ScenarioResult {
            name: "memory".into(),
            figures: json!({
                "name": "memory",
                "processes": rows,
                "notes": ["RSS idle (before the run) and the peak under the scenarios run before it"],
            }),
            series: Vec::new(),
        });
    }

    let dir = options.out.join(timestamp());
    std::fs::create_dir_all(&dir)?;
    output::table(&context, &results);
    output::write_json(&dir, &context, &results)?;
    output::plots(&dir, &results);
    println!("results: {}", dir.display());
    // Closed while the runtime still runs: a client dropped during its shutdown panicked in
    // the driver (ending its sessions needs the connection pool's task).
    setup.event_db.client().clone().shutdown().await;
    Ok((dir, all_ran))
}

/// `git rev-parse --short HEAD`, with `-dirty` when the working tree has changes.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    match git(&["status", "--porcelain"]) {
        Some(changes) if !changes.is_empty() => format!("{head}-dirty"),
        _ => head,
    }
}

/// Where MongoDB keeps its data: tmpfs (/dev/shm) or disk, which changes commit latency.
pub async fn mongo_placement(admin: &mongo_kit::mongodb::Database) -> String {
    let Ok(options) = admin.run_command(doc! { "getCmdLineOpts": 1 }).await else {
        return "unknown".into();
    };
    let dbpath = options
        .get_document("parsed")
        .ok()
        .and_then(|p| p.get_document("storage").ok())
        .and_then(|s| s.get_str("dbPath").ok())
        .unwrap_or("?")
        .to_owned();
    let kind = if dbpath.starts_with("/dev/shm") {
        "tmpfs"
    } else {
        "disk"
    };
    format!("{kind} ({dbpath})")
}

fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let kb: f64 = m
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0 / 1024.0)
    });
    json!({ "cores": cores, "memory_gib": mem_gib })
}

/// `2026-11-27T122038`: sorts by time and is a valid file name everywhere.
fn timestamp() -> String {
    let now = mongo_kit::mongodb::bson::DateTime::now()
        .try_to_rfc3339_string()
        .unwrap_or_default();
    now.chars().take(19).filter(|c| *c != ':').collect()
}
