//! Each service binary exits cleanly (status 0, a "stopped" log line) on SIGTERM and SIGINT.

use e2e_tests::ServiceProcess;
use service_config::catalog::SERVICES;
use std::time::Duration;

fn exits_cleanly_on(signal: &str) {
    for spec in SERVICES {
        let service = ServiceProcess::start(spec.name, &[]);
        service.signal(signal);
        let (status, log) = service.wait_for_exit(Duration::from_secs(15));
        assert!(
            status.success(),
            "{} exited with {status} on SIG{signal}",
            spec.name
        );
        assert!(
            log.iter().any(|l| l.contains("\"stopped\"")),
            "{} did not log a clean stop: {log:?}",
            spec.name
        );
    }
}

#[test]
fn services_exit_cleanly_on_sigterm() {
    exits_cleanly_on("TERM");
}

#[test]
fn services_exit_cleanly_on_sigint() {
    exits_cleanly_on("INT");
}
