//! End-to-end tests of the platform as the dev tool starts it: every process a real binary on
//! loopback, with real MongoDB, Kafka and schema registry. The tests live in `tests/tests/`;
//! this library holds what several of them share.

use std::io::{BufRead, BufReader, Lines};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A service binary started by a test (rather than by the dev tool) with the test instance's
/// configuration for that service, on a free port, with `overrides` on top.
pub struct ServiceProcess {
    pub name: &'static str,
    child: Child,
    logs: Lines<BufReader<ChildStdout>>,
    /// `host:port` it listens on, from its "listening" log line.
    pub addr: String,
}

impl ServiceProcess {
    pub fn start(name: &'static str, overrides: &[(&str, String)]) -> Self {
        let config_dir = test_support::required(test_support::CONFIG_DIR);
        let mut command = Command::new(binary(name));
        command
            .env("REWARDS_CONFIG_FILE", format!("{config_dir}/{name}.toml"))
            .env("REWARDS_HTTP__PORT", "0")
            .env("REWARDS_LOG__FORMAT", "json")
            .env_remove("RUST_LOG");
        for (key, value) in overrides {
            command.env(key, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut logs = BufReader::new(child.stdout.take().unwrap()).lines();
        // The "listening" line comes once the port is bound and signals are handled.
        let addr = logs
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                let entry: serde_json::Value = serde_json::from_str(&line).ok()?;
                (entry["message"] == "listening")
                    .then(|| entry["addr"].as_str().unwrap().to_owned())
            })
            .unwrap_or_else(|| panic!("{name} exited before listening"));
        Self {
            name,
            child,
            logs,
            addr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; returns its status and the rest of its log.
    pub fn wait_for_exit(mut self, deadline: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let give_up = Instant::now() + deadline;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < give_up,
                "{} did not exit within {deadline:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest = self.logs.by_ref().map_while(Result::ok).collect();
        (status, rest)
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Service binaries sit next to the `deps/` folder test binaries are built into.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    dir.join(name)
}

/// A loopback port nothing listens on.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
