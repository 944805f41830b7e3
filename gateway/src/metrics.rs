//! The gateway's metric names, each described once for `/metrics`.

/// Requests sent again to another instance, by `upstream`.
pub const RETRIES: &str = "gateway_upstream_retries_total";
/// Instances in rotation, by `upstream`.
pub const IN_ROTATION: &str = "gateway_upstream_instances_in_rotation";
/// Requests refused because their access token did not verify, by problem `code`.
pub const AUTH_FAILURES: &str = "gateway_auth_failures_total";

/// Every metric the gateway emits.
pub const ALL: &[&str] = &[RETRIES, IN_ROTATION, AUTH_FAILURES];

/// Describes the metrics above, once at start-up. Installs the process's recorder first, so
/// that the descriptions are not lost on the no-op recorder.
pub fn describe_metrics() {
    telemetry::metrics();
    ::metrics::describe_counter!(
        RETRIES,
        "Requests the gateway sent again to another instance of the same service"
    );
    ::metrics::describe_gauge!(
        IN_ROTATION,
        "Instances of a service that the gateway currently sends requests to"
    );
    ::metrics::describe_counter!(
        AUTH_FAILURES,
        "Requests the gateway refused because their access token did not verify"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_listed_once_and_described() {
        telemetry::check_metric_names(super::ALL, super::describe_metrics);
    }
}
