//! The metrics every service's HTTP side records, each named and described once.

/// HTTP requests answered, by method, route template and status.
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// Seconds from a request's arrival to its response, by method, route template and status.
pub const HTTP_REQUEST_DURATION: &str = "http_request_duration_seconds";

/// Describes every metric above to the recorder; called once at service start.
pub fn describe_metrics() {
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests answered");
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION,
        "Time from an HTTP request's arrival to its response"
    );
}
