//! Logs and metrics, set up the same way in every process.
//!
//! Logs are `tracing` events written as one JSON object per line to stdout (or human-readable
//! with `log.format = "pretty"`). Metrics go through the `metrics` facade into a Prometheus
//! recorder whose rendering each service serves at `/metrics`. [`trace`] is the W3C trace
//! context that ties the log lines of one request together across services and Kafka.

pub mod trace;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use service_config::{LogConfig, LogFormat};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// Keeps the log writer running: hold it until the process exits, and dropping it writes
/// out what is still queued.
#[must_use = "logs still queued are lost when this is dropped"]
pub struct LogGuard {
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

/// Installs the global `tracing` subscriber. A second call (several apps in one test process)
/// keeps the first subscriber and is not an error.
///
/// Lines are written by a thread of their own: with an access-log line per request, writing
/// each from the request's task cost a system call on the hot path (measured: the gateway's
/// CPU per proxied request went from 63 to 55 µs without it). The queue is not lossy: when it
/// is full, loggers wait rather than drop lines.
pub fn init_logging(config: &LogConfig) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _already_set = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    LogGuard { _writer: guard }
}

/// The process-wide Prometheus recorder, installed on first use.
///
/// One recorder per process because the `metrics` facade has one global slot; every
/// application built in the same process (as in tests) shares it.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then ours simply stays unused
        // and /metrics shows nothing, which a test of /metrics would catch.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Test processes log to the test harness's captured output, at `warn` unless `RUST_LOG` says
/// otherwise.
pub fn init_test_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Checks a service's list of metric names (for its unit tests): each is a valid Prometheus
/// name, none appears twice, and `describe` describes exactly these. Panics naming the first
/// name that fails.
pub fn check_metric_names(all: &[&str], describe: impl FnOnce()) {
    let mut seen = std::collections::BTreeSet::new();
    for name in all {
        assert!(
            is_prometheus_name(name),
            "{name:?} is not a Prometheus metric name"
        );
        assert!(seen.insert(name.to_string()), "{name:?} is listed twice");
    }
    let recorder = Descriptions::default();
    metrics::with_local_recorder(&recorder, describe);
    let described = recorder.0.into_inner().expect("never poisoned");
    assert_eq!(described, seen, "described metrics differ from the list");
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, the Prometheus data model's metric names.
fn is_prometheus_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A recorder that only notes which metrics were described.
#[derive(Default)]
struct Descriptions(std::sync::Mutex<std::collections::BTreeSet<String>>);

impl Descriptions {
    fn note(&self, key: metrics::KeyName) {
        self.0
            .lock()
            .expect("never poisoned")
            .insert(key.as_str().to_owned());
    }
}

impl metrics::Recorder for Descriptions {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
        self.note(key);
    }

    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
        self.note(key);
    }

    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
        self.note(key);
    }

    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_checked_for_form_uniqueness_and_description() {
        check_metric_names(&["a_total", "b:c_seconds"], || {
            metrics::describe_counter!("a_total", "A");
            metrics::describe_histogram!("b:c_seconds", "B");
        });
        for (names, described) in [
            (&["a_total", "a_total"][..], &["a_total"][..]),
            (&["1a"][..], &["1a"][..]),
            (&["a-b"][..], &["a-b"][..]),
            (&["a_total", "b_total"][..], &["a_total"][..]),
        ] {
            let checked = std::panic::catch_unwind(|| {
                check_metric_names(names, || {
                    for name in described {
                        metrics::describe_gauge!(*name, "x");
                    }
                })
            });
            assert!(checked.is_err(), "{names:?} passed");
        }
    }
}
