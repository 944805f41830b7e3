//! CPU and memory of the instance's processes, read from /proc using the pid files the dev
//! tool writes (`<instance>/pids/<component>.pid`): what each process costs under a load,
//! without any agent in the processes themselves.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Kernel clock ticks per second of utime/stime; 100 on every Linux we run on, and
/// `getconf` says otherwise if not.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

#[derive(Debug, Clone)]
pub struct Process {
    pub name: String,
    pub pid: u32,
}

/// The components of the instance whose config dir is `config_dir`, by their pid files.
pub fn instance_processes(config_dir: &Path) -> Vec<Process> {
    let pids: PathBuf = config_dir
        .parent()
        .map(|root| root.join("pids"))
        .unwrap_or_default();
    let mut found: Vec<Process> = std::fs::read_dir(&pids)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry
                .file_name()
                .to_string_lossy()
                .strip_suffix(".pid")?
                .to_owned();
            let pid = std::fs::read_to_string(entry.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Path::new(&format!("/proc/{pid}"))
                .exists()
                .then_some(Process { name, pid })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// utime + stime in ticks; `None` once the process is gone.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields count from after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Resident set size in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Samples every process once a second on a thread of its own (so a saturated runtime does
/// not skew the samples) until stopped.
pub struct Sampler {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Value>,
}

impl Sampler {
    pub fn start(processes: Vec<Process>) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let hz = clock_ticks();
            let started = Instant::now();
            let first: Vec<Option<u64>> = processes.iter().map(|p| cpu_ticks(p.pid)).collect();
            let mut rss_max = vec![0.0f64; processes.len()];
            loop {
                for (i, p) in processes.iter().enumerate() {
                    rss_max[i] = rss_max[i].max(rss_mib(p.pid).unwrap_or(0.0));
                }
                match stopped.recv_timeout(Duration::from_secs(1)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => break,
                }
            }
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            let rows: Vec<Value> = processes
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let cpu = match (first[i], cpu_ticks(p.pid)) {
                        (Some(a), Some(b)) => Some((b.saturating_sub(a)) as f64 / hz / secs * 100.0),
                        _ => None,
                    };
                    json!({ "name": p.name, "pid": p.pid, "cpu_pct": cpu, "rss_mib_max": rss_max[i] })
                })
                .collect();
            Value::Array(rows)
        });
        Self { stop, thread }
    }

    /// Per process: average CPU% over the sampling period and the highest RSS seen.
    pub fn finish(self) -> Value {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or(Value::Null)
    }
}
