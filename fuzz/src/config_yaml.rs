//! The YAML a user writes, down every path that reads it: `bowline up -f` / `apply`
//! ([`config::parse_documents`]: multi-document parse, strict typing, validation) and on
//! to the control plane's compilation into xDS ([`control_plane::translate::translate`]);
//! and ztunnel's own local mesh file ([`ztunnel::state::file_source::parse`]). The input is the
//! file's text (not UTF-8: refused before any parser, as `read_to_string` would).
//!
//! What the control plane compiles from resources the config crate accepted must be what
//! ztunnel accepts: a compiled resource that ztunnel's conversion refuses would be NACKed
//! on every node, so the harness treats it as a finding.

use std::collections::BTreeMap;
use std::path::Path;

use control_plane::translate::{Captured, Compiled, MeshSettings, translate};
use xds::workload::address;
use ztunnel::state::convert;

/// One input: one file.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(resources) = config::parse_documents(text, "fuzz.yaml") {
        let objects: BTreeMap<_, _> = resources.into_iter().map(|r| (r.key(), r)).collect();
        for resource in objects.values() {
            let _ = resource.to_json();
        }
        let settings = MeshSettings::default();
        // Once before any node agent reported, once with every workload captured.
        let before = translate(&objects, &settings, &Captured::default());
        let compiled = translate(&objects, &settings, &all_captured(&before));
        for compiled in [before, compiled] {
            check(&compiled);
        }
    }
    if let Ok(snapshot) = ztunnel::state::file_source::parse(text, Path::new("fuzz-mesh.yaml")) {
        crate::xds_state::exercise(&snapshot);
    }
}

/// Every compiled workload reported captured by the agent of its node.
pub fn all_captured(compiled: &Compiled) -> Captured {
    let mut by_node: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for resource in compiled.addresses.values() {
        if let Some(address::Type::Workload(w)) = &resource.r#type {
            by_node
                .entry(w.node.clone())
                .or_default()
                .insert(w.uid.clone());
        }
    }
    let mut captured = Captured::default();
    for (node, uids) in by_node {
        captured.replace(&node, uids);
    }
    captured
}

/// Everything compiled converts in ztunnel.
fn check(compiled: &Compiled) {
    for (name, resource) in &compiled.addresses {
        let refused = match resource.r#type.clone() {
            Some(address::Type::Workload(w)) => convert::workload(w).err(),
            Some(address::Type::Service(s)) => convert::service(s).err(),
            None => None,
        };
        if let Some(error) = refused {
            panic!(
                "the control plane compiled {name} from valid YAML, ztunnel refuses it: {error}"
            );
        }
    }
    for (name, policy) in &compiled.authorizations {
        if let Err(error) = convert::policy((**policy).clone()) {
            panic!(
                "the control plane compiled policy {name} from valid YAML, ztunnel refuses it: {error}"
            );
        }
    }
}
