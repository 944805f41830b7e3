//! The fulfillment service's metric names, each described once for `/metrics`.

/// Grant decisions committed, by reward `type` and `outcome`.
pub const GRANTS: &str = "grants_total";

/// Every metric the fulfillment service emits.
pub const ALL: &[&str] = &[GRANTS];

/// Describes the metrics above, once at start-up. Installs the process's recorder first, so
/// that the descriptions are not lost on the no-op recorder.
pub fn describe_metrics() {
    telemetry::metrics();
    ::metrics::describe_counter!(
        GRANTS,
        "Grant decisions committed, by reward type and outcome"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_listed_once_and_described() {
        telemetry::check_metric_names(super::ALL, super::describe_metrics);
    }
}
