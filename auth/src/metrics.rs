//! The auth service's metric names, each described once for `/metrics`.

/// Accounts registered.
pub const REGISTRATIONS: &str = "auth_registrations_total";
/// Sign-ins, by `outcome` (`success`, `banned`, `invalid`).
pub const LOGINS: &str = "auth_logins_total";

/// Every metric the auth service emits.
pub const ALL: &[&str] = &[REGISTRATIONS, LOGINS];

/// Describes the metrics above, once at start-up. Installs the process's recorder first, so
/// that the descriptions are not lost on the no-op recorder.
pub fn describe_metrics() {
    telemetry::metrics();
    ::metrics::describe_counter!(REGISTRATIONS, "Accounts registered");
    ::metrics::describe_counter!(LOGINS, "Sign-ins by outcome (success, banned, invalid)");
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_listed_once_and_described() {
        telemetry::check_metric_names(super::ALL, super::describe_metrics);
    }
}
