//! Starting, finding, signalling and stopping the processes of an instance.
//!
//! A started process gets its own process group (a ctrl-c in the terminal that ran `./dev up`
//! does not reach it), appends stdout and stderr to its log file, and leaves its pid in a pid
//! file. Before trusting a pid file, the tool checks that the pid still belongs to the
//! program it started (a marker in `/proc/<pid>/cmdline` or `environ`), since pids are reused.
//!
//! [`Launch`] records how a running process was started (its command line, environment and
//! working directory, from `/proc`), so that a process killed on purpose can be started
//! again exactly as it was, by a program that does not know how to configure it.

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A log larger than this is moved to `<log>.1` (replacing the one before) when its process
/// starts. Services write an access-log line per request, so a day of benchmarks left
/// several GiB per service and once filled the disk.
const LOG_ROTATE_BYTES: u64 = 256 * 1024 * 1024;

/// Spawns `command` detached, logging to `log` and recording its pid in `pid_file`.
pub fn spawn(command: &mut Command, log: &Path, pid_file: &Path) -> anyhow::Result<u32> {
    if std::fs::metadata(log).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let mut previous = log.as_os_str().to_owned();
        previous.push(".1");
        std::fs::rename(log, &previous)
            .with_context(|| format!("moving {} aside", log.display()))?;
    }
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(open_log()?)
        .stderr(open_log()?)
        .process_group(0)
        .spawn()
        // The program only: a command's Debug output lists its environment, secrets too.
        .with_context(|| format!("starting {}", command.get_program().to_string_lossy()))?;
    let pid = child.id();
    std::fs::write(pid_file, pid.to_string())?;
    Ok(pid)
}

/// The pid recorded in `pid_file`, if that process is alive and its command line or
/// environment contains `marker` (a path unique to the instance: a data directory or config
/// file, which infrastructure gets as arguments and services as `REWARDS_CONFIG_FILE`).
pub fn running(pid_file: &Path, marker: &str) -> Option<u32> {
    let pid = read_pid(pid_file)?;
    let mentions_marker = |file: &str| {
        std::fs::read(format!("/proc/{pid}/{file}"))
            .is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(marker))
    };
    (is_alive(pid) && (mentions_marker("cmdline") || mentions_marker("environ"))).then_some(pid)
}

pub fn read_pid(pid_file: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// Alive and not a zombie. Reaps the process if it is our own exited child.
pub fn is_alive(pid: u32) -> bool {
    let nix_pid = Pid::from_raw(pid as i32);
    // Only succeeds for our own children; for others it fails with ECHILD, which is fine.
    let _ = waitpid(nix_pid, Some(WaitPidFlag::WNOHANG));
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// SIGTERM, then up to `grace` for a clean exit, then SIGKILL (waited for at most 10 s more,
/// in case the process hangs in the kernel). Returns whether it exited cleanly within the grace
/// period.
pub fn stop(pid: u32, grace: Duration) -> bool {
    let nix_pid = Pid::from_raw(pid as i32);
    match kill(nix_pid, Signal::SIGTERM) {
        Ok(()) => {}
        Err(nix::errno::Errno::ESRCH) => return true,
        Err(e) => {
            eprintln!("cannot signal pid {pid}: {e}");
            return false;
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(nix_pid, Signal::SIGKILL);
    let give_up = Instant::now() + Duration::from_secs(10);
    while is_alive(pid) && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub fn signal(pid: u32, signal: Signal) -> anyhow::Result<()> {
    match kill(Pid::from_raw(pid as i32), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("sending {signal} to pid {pid}: {e}")),
    }
}

pub use nix::sys::signal::Signal as Sig;

/// How a running process was started: enough to start it again the same way.
#[derive(Debug, Clone)]
pub struct Launch {
    argv: Vec<std::ffi::OsString>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    cwd: std::path::PathBuf,
}

impl Launch {
    /// Reads `pid`'s command line, environment and working directory from /proc.
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let read = |file: &str| {
            std::fs::read(format!("/proc/{pid}/{file}"))
                .with_context(|| format!("reading /proc/{pid}/{file}"))
        };
        // Each entry ends with a NUL; an empty argument is an entry too, and is kept.
        let split = |bytes: &[u8]| -> Vec<std::ffi::OsString> {
            let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
            if bytes.is_empty() {
                return Vec::new();
            }
            bytes
                .split(|b| *b == 0)
                .map(|part| std::ffi::OsStr::from_bytes(part).to_owned())
                .collect()
        };
        let argv = split(&read("cmdline")?);
        anyhow::ensure!(
            !argv.is_empty(),
            "pid {pid} has no command line (a zombie?)"
        );
        let env = split(&read("environ")?)
            .into_iter()
            .filter_map(|pair| {
                let bytes = pair.as_bytes();
                let eq = bytes.iter().position(|b| *b == b'=')?;
                Some((
                    std::ffi::OsStr::from_bytes(&bytes[..eq]).to_owned(),
                    std::ffi::OsStr::from_bytes(&bytes[eq + 1..]).to_owned(),
                ))
            })
            .collect();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .with_context(|| format!("reading /proc/{pid}/cwd"))?;
        Ok(Self { argv, env, cwd })
    }

    /// Starts the process again, as [`spawn`] does.
    pub fn spawn(&self, log: &Path, pid_file: &Path) -> anyhow::Result<u32> {
        let mut command = Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd);
        spawn(&mut command, log, pid_file)
    }
}

/// Resident set size in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_relaunched_with_its_arguments_environment_and_directory() {
        let dir = std::env::temp_dir().join(format!("supervise-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (log, pid_file) = (dir.join("p.log"), dir.join("p.pid"));
        let script = "echo \"$0 $1 [$2] $MARK $(pwd)\"; sleep 30";
        let mut command = Command::new("sh");
        command
            .args(["-c", script, "first", "second arg", ""])
            .env("MARK", "kept")
            .current_dir(&dir);
        let wanted = format!("first second arg [] kept {}", dir.display());
        let logged = |times: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            let count = || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.matches(&wanted).count()
            };
            while count() < times {
                assert!(
                    Instant::now() < deadline,
                    "log: {:?}",
                    std::fs::read_to_string(&log)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let pid = spawn(&mut command, &log, &pid_file).unwrap();
        // Until it has printed, it may still be inside exec, its command line not yet there.
        logged(1);
        let launch = Launch::of(pid).unwrap();
        stop(pid, Duration::from_secs(5));
        let again = launch.spawn(&log, &pid_file).unwrap();
        logged(2);
        assert_eq!(read_pid(&pid_file), Some(again));
        stop(again, Duration::from_secs(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_log_over_the_limit_is_moved_aside_when_its_process_starts() {
        let dir = std::env::temp_dir().join(format!("xtask-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (log, pid_file) = (dir.join("svc.log"), dir.join("svc.pid"));
        // Sparse: as large as the limit says without writing it.
        std::fs::File::create(&log)
            .unwrap()
            .set_len(LOG_ROTATE_BYTES + 1)
            .unwrap();
        let mut command = Command::new("true");
        spawn(&mut command, &log, &pid_file).unwrap();
        let moved = std::fs::metadata(dir.join("svc.log.1")).unwrap().len();
        let fresh = std::fs::metadata(&log).unwrap().len();
        // A log under the limit stays where it is (the earlier one is not replaced by it).
        spawn(&mut command, &log, &pid_file).unwrap();
        let still_moved = std::fs::metadata(dir.join("svc.log.1")).unwrap().len();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(moved, LOG_ROTATE_BYTES + 1);
        assert!(fresh < 1024, "a new log was started: {fresh} bytes");
        assert_eq!(still_moved, LOG_ROTATE_BYTES + 1);
    }
}
