//! Connection ids and W3C trace context (`traceparent`, carried in the HBONE `CONNECT`)
//! so the two ztunnels' lines for one connection can be joined: the source generates a
//! trace id per connection, the destination adopts it (with its own span id) when the
//! header is valid and generates one otherwise. Nothing here is used for authorization.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide random keys; ids are a keyed hash of a counter, so they are unique in
/// the process and not predictable from outside.
static KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);
static COUNTER: AtomicU64 = AtomicU64::new(1);

fn random_u64() -> u64 {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Zero is an invalid trace/span id; a hash of zero is astronomically unlikely, but
    // never emit it.
    KEYS.hash_one(n).max(1)
}

/// A connection's local id (unique within this process), for log correlation.
pub fn connection_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// W3C trace context of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 128-bit trace id shared by both ends.
    pub trace_id: u128,
    /// This hop's span id.
    pub span_id: u64,
}

impl TraceContext {
    /// A fresh trace.
    pub fn new() -> Self {
        Self {
            trace_id: (u128::from(random_u64()) << 64) | u128::from(random_u64()),
            span_id: random_u64(),
        }
    }

    /// The trace a received `traceparent` continues (with a new span id for this hop),
    /// or a fresh one when the header is absent or malformed.
    pub fn continue_from(header: Option<&str>) -> Self {
        match header.and_then(parse_traceparent) {
            Some(trace_id) => Self {
                trace_id,
                span_id: random_u64(),
            },
            None => Self::new(),
        }
    }

    /// The `traceparent` header value (version 00, not sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-00", self.trace_id, self.span_id)
    }
}

impl Default for TraceContext {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.trace_id)
    }
}

/// The trace id of a version-00 `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if valid
/// and non-zero.
fn parse_traceparent(value: &str) -> Option<u128> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if version != "00" || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    if parts.next().is_some() {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let parent_id = u64::from_str_radix(parent, 16).ok()?;
    (trace_id != 0 && parent_id != 0).then_some(trace_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_destination_continues_the_sources_trace() {
        let source = TraceContext::new();
        let header = source.traceparent();
        let destination = TraceContext::continue_from(Some(&header));
        assert_eq!(destination.trace_id, source.trace_id);
        assert_ne!(destination.span_id, source.span_id);
        assert_eq!(header.len(), 55);
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031zz-b7ad6b7169203331-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
        assert_eq!(
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            Some(0x0af7651916cd43dd8448eb211c80319c)
        );
    }

    #[test]
    fn ids_do_not_repeat() {
        let ids: std::collections::HashSet<_> =
            (0..1000).map(|_| TraceContext::new().trace_id).collect();
        assert_eq!(ids.len(), 1000);
    }
}
