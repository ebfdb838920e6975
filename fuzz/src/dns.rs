//! The DNS proxy's answer to one datagram from a pod, as `serve_udp` computes it: the
//! input is the query bytes. [`ztunnel::dns::answer`] against a fixed mesh
//! ([`crate::MESH_YAML`]) for a pod in `shop`; a reply is then fitted to the size the
//! query allows ([`ztunnel::dns::fit_udp`]), and a query that would be forwarded gets the
//! SERVFAIL sent when no upstream answers ([`ztunnel::dns::servfail`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ztunnel::dns::{self, Action, DnsContext, DnsSettings};
use ztunnel::state::{Snapshot, Store};

struct Harness {
    snapshot: Snapshot,
    context: DnsContext,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let settings = DnsSettings {
            enabled: true,
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_secs(1),
            cluster_domain: crate::TRUST_DOMAIN.into(),
        };
        Harness {
            snapshot: crate::mesh(),
            context: DnsContext::new(Arc::new(Store::default()), settings, "shop", "shop/client"),
        }
    })
}

/// One input: one datagram.
pub fn run(data: &[u8]) {
    let h = harness();
    match dns::answer(&h.snapshot, &h.context, data) {
        Action::Reply(reply) => {
            let _ = dns::fit_udp(reply, dns::query_payload_limit(data));
        }
        Action::Forward => {
            let _ = dns::servfail(data);
        }
        Action::Drop => {}
    }
}
