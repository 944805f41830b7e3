//! The event service's metric names, each described once for `/metrics`.

/// Claim requests, by `result` (`accepted`, `repeated`, a refusal's code, `undecided`,
/// `error`).
pub const CLAIMS: &str = "claims_total";
/// Claims settled, by `status` (`SUCCEEDED`, `FAILED`).
pub const CLAIMS_SETTLED: &str = "claims_settled_total";
/// Grant commands sent again because no result came in time (the COMMAND_RESENT step; the
/// name keeps the step's earlier spelling so that dashboards keep working).
pub const CLAIMS_COMMAND_RESENT: &str = "claims_recommanded_total";
/// Grants that succeeded after their claim had been given up on and compensated.
pub const CLAIMS_LATE_SUCCESS: &str = "claims_late_success_total";
/// Claims PENDING now: sagas waiting for their grant's result (gauge, sampled every 5 s).
pub const CLAIMS_PENDING: &str = "claims_pending";
/// Claims committed per batch transaction.
pub const CLAIM_BATCH_SIZE: &str = "claim_batch_size";
/// Time one claim batch took to decide and commit.
pub const CLAIM_BATCH_SECONDS: &str = "claim_batch_seconds";

/// Every metric the event service emits.
pub const ALL: &[&str] = &[
    CLAIMS,
    CLAIMS_SETTLED,
    CLAIMS_COMMAND_RESENT,
    CLAIMS_LATE_SUCCESS,
    CLAIMS_PENDING,
    CLAIM_BATCH_SIZE,
    CLAIM_BATCH_SECONDS,
];

/// Describes the metrics above, once at start-up. Installs the process's recorder first, so
/// that the descriptions are not lost on the no-op recorder.
pub fn describe_metrics() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    telemetry::metrics();
    describe_counter!(CLAIMS, "Claim requests by result");
    describe_counter!(CLAIMS_SETTLED, "Claims settled, by final status");
    describe_counter!(
        CLAIMS_COMMAND_RESENT,
        "Grant commands sent again because no result came in time"
    );
    describe_counter!(
        CLAIMS_LATE_SUCCESS,
        "Grants that succeeded after their claim had been compensated"
    );
    describe_gauge!(CLAIMS_PENDING, "Claims waiting for their grant's result");
    describe_histogram!(
        CLAIM_BATCH_SIZE,
        Unit::Count,
        "Claims decided together in one batch"
    );
    describe_histogram!(
        CLAIM_BATCH_SECONDS,
        Unit::Seconds,
        "Time one claim batch took to decide and commit"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_listed_once_and_described() {
        telemetry::check_metric_names(super::ALL, super::describe_metrics);
    }
}
