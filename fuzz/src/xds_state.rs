//! xDS resources into ztunnel's state, as the xDS client applies them: the input is
//! [`crate::records`], each one resource body as it arrives in a delta ADS response —
//! tag bit 0 clear: `istio.workload.Address` (a workload or a service), set:
//! `istio.security.Authorization`. Each is prost-decoded and validated by
//! [`ztunnel::state::convert`]; the survivors build a [`Snapshot`] (which refuses
//! conflicts), and the harness then uses it the way the data path does: L4 policy
//! verdicts for every workload, endpoint lookups and DNS resolution for every service,
//! the config-dump JSON.

use std::net::{IpAddr, Ipv4Addr};

use policy::L4Request;
use prost::Message;
use xds::security::Authorization;
use xds::workload::{Address, address};
use ztunnel::state::{Snapshot, convert};

/// One input: one set of resources.
pub fn run(data: &[u8]) {
    let (mut workloads, mut services, mut policies) = (Vec::new(), Vec::new(), Vec::new());
    for (tag, body) in crate::records(data) {
        if tag & 1 == 0 {
            match Address::decode(body).map(|a| a.r#type) {
                Ok(Some(address::Type::Workload(w))) => workloads.extend(convert::workload(w).ok()),
                Ok(Some(address::Type::Service(s))) => services.extend(convert::service(s).ok()),
                Ok(None) | Err(_) => {}
            }
        } else if let Ok(a) = Authorization::decode(body) {
            policies.extend(convert::policy(a).ok());
        }
    }
    let Ok(snapshot) = Snapshot::build(workloads, services, policies) else {
        return;
    };
    exercise(&snapshot);
}

/// What the proxy, DNS and admin paths ask of a snapshot.
pub fn exercise(snapshot: &Snapshot) {
    let peer = crate::id("shop", "frontend");
    let source = IpAddr::V4(Ipv4Addr::new(10, 10, 0, 3));
    for workload in snapshot.workloads() {
        for &destination_ip in workload.addresses.iter().take(2) {
            let _ = snapshot.workload_by_ip(destination_ip);
            for (identity, port) in [(Some(&peer), 9080), (None, 80)] {
                let request = L4Request {
                    source_identity: identity,
                    source_ip: source,
                    destination_ip,
                    destination_port: port,
                };
                let _ = policy::evaluate(snapshot.policies_for(workload), &request);
            }
        }
        let _ = serde_json::to_string(&**workload);
    }
    for service in snapshot.services() {
        let _ = snapshot.endpoints(&service.key());
        for vip in &service.vips {
            let _ = snapshot.service_by_vip(*vip);
        }
        let _ = ztunnel::dns::resolve(snapshot, &service.hostname, "shop", crate::TRUST_DOMAIN);
        let _ = serde_json::to_string(&**service);
    }
}
