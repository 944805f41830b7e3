//! W3C trace context (`traceparent`), carried the same way over HTTP and Kafka.
//!
//! Every request the platform serves belongs to a trace: one the client sent, or one the
//! first service to see the request starts. A message written because of a request carries
//! that request's `traceparent` as a Kafka header; a consumer continues the trace of each
//! message it handles, and what it produces in turn carries it on. Logs name the trace by
//! its `trace_id` field, so one claim can be followed from the gateway's access log to
//! fulfillment and back.

use std::fmt;
use uuid::Uuid;

/// The header's name, over HTTP and in Kafka headers alike.
pub const HEADER: &str = "traceparent";

/// A parsed `traceparent`: `<version>-<trace id>-<parent id>-<flags>`, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: String,
    parent_id: String,
    flags: String,
}

impl TraceParent {
    /// Reads a header value as W3C Trace Context level 1 says: version `ff` and all-zero
    /// ids are invalid; a later version's value is read by its first four fields.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let valid = hex(version, 2)
            && version != "ff"
            && (version != "00" || parts.next().is_none())
            && hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && hex(parent_id, 16)
            && parent_id.bytes().any(|b| b != b'0')
            && hex(flags, 2);
        valid.then(|| Self {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    /// A new trace, sampled.
    pub fn root() -> Self {
        Self {
            trace_id: Uuid::new_v4().simple().to_string(),
            parent_id: span_id(),
            flags: "01".to_owned(),
        }
    }

    /// `value` when it is a valid `traceparent`, else a new trace.
    pub fn parse_or_root(value: Option<&str>) -> Self {
        value.and_then(Self::parse).unwrap_or_else(Self::root)
    }

    /// The same trace with a new parent id: what a hop passes on to the next.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            parent_id: span_id(),
            flags: self.flags.clone(),
        }
    }

    /// Whether the trace's originator asks for it to be recorded (flag bit 0). Per-message
    /// log lines of consumers are written for sampled traces only.
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.flags, 16).is_ok_and(|flags| flags & 1 == 1)
    }

    /// 32 lower-case hex digits; the `trace_id` field of log lines.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

/// 16 hex digits, never all zero (a v4 UUID's half holds its version bits).
fn span_id() -> String {
    let half = Uuid::new_v4().as_u64_pair().0;
    format!("{half:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_value_reads_back_as_written() {
        let parsed = TraceParent::parse(SAMPLE).unwrap();
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.to_string(), SAMPLE);
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version may add fields; its first four still count.
        assert!(TraceParent::parse(&format!("01{}-more", &SAMPLE[2..])).is_some());
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_parent() {
        let parent = TraceParent::parse(SAMPLE).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.to_string(), parent.to_string());
        assert!(TraceParent::parse(&child.to_string()).is_some());
    }

    #[test]
    fn roots_are_valid_and_distinct() {
        let (a, b) = (TraceParent::root(), TraceParent::root());
        assert!(TraceParent::parse(&a.to_string()).is_some());
        assert_ne!(a.trace_id(), b.trace_id());
        assert!(TraceParent::parse_or_root(Some("junk")).sampled());
        assert!(
            !TraceParent::parse(&SAMPLE.replace("-01", "-00"))
                .unwrap()
                .sampled()
        );
    }
}
