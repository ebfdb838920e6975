//! The kubelet's secret volumes, for ingress gateways: each ingress gateway pod gets the
//! `kubernetes.io/tls` Secrets its Gateway's HTTPS listeners name, as files under
//! `<lab>/secrets/<namespace>-<pod>/<secret namespace>/<secret name>/tls.crt` and
//! `tls.key` (the directory it is told in `BOWLINE_SECRETS_DIR`). Certificates go to the
//! gateway as files, never over xDS: only the pod that serves a Secret can read it.
//!
//! Owns: writing those files when a Secret changes (mode 0600 from the first byte, whole
//! files replaced by rename, so the gateway never reads half of one) and removing those
//! no longer named. Must not:
//! decide which Secrets a listener uses — the Gateway says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::Resource;
use config::resources::{self as k8s, INGRESS_CLASS, TLS_SECRET_TYPE};

use super::LabError;

/// The secrets directory of ingress gateway pod `namespace/pod` in lab directory `dir`.
pub(super) fn dir_of(dir: &Path, namespace: &str, pod: &str) -> PathBuf {
    dir.join("secrets").join(format!("{namespace}-{pod}"))
}

/// Brings every ingress gateway pod's secret files in `dir` up to date with `objects`.
pub(super) fn sync(dir: &Path, objects: &[Resource]) -> Result<(), LabError> {
    let secrets: BTreeMap<(&str, &str), &k8s::Secret> = objects
        .iter()
        .filter_map(|r| match r {
            Resource::Secret(s) if s.type_.as_deref() == Some(TLS_SECRET_TYPE) => {
                Some(((s.metadata.namespace(), s.metadata.name.as_str()), s))
            }
            _ => None,
        })
        .collect();
    for pod in objects.iter().filter_map(|r| match r {
        Resource::Pod(p) if control_plane::waypoints::is_ingress(p) => Some(p),
        _ => None,
    }) {
        let ns = pod.metadata.namespace();
        let gateway = control_plane::waypoints::gateway_of(pod).unwrap_or_default();
        let Some(gateway) = objects.iter().find_map(|r| match r {
            Resource::Gateway(g)
                if g.metadata.namespace() == ns
                    && g.metadata.name == gateway
                    && g.spec.gateway_class_name == INGRESS_CLASS =>
            {
                Some(g)
            }
            _ => None,
        }) else {
            continue;
        };
        let root = dir_of(dir, ns, &pod.metadata.name);
        let mut wanted: BTreeMap<PathBuf, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
        for r in gateway
            .spec
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|t| &t.certificate_refs)
        {
            // Only the Gateway's own namespace (the control plane notes the others).
            let secret_ns = r.namespace.as_deref().unwrap_or(ns);
            let Some(secret) = secrets.get(&(secret_ns, r.name.as_str())) else {
                continue;
            };
            if secret_ns != ns {
                continue;
            }
            if let (Some(chain), Some(key)) = (secret.value("tls.crt"), secret.value("tls.key")) {
                wanted.insert(root.join(secret_ns).join(&r.name), (chain, key));
            }
        }
        write(&root, &wanted)?;
    }
    Ok(())
}

/// Makes `root` hold exactly the `wanted` Secret folders.
fn write(root: &Path, wanted: &BTreeMap<PathBuf, (Vec<u8>, Vec<u8>)>) -> Result<(), LabError> {
    for (folder, (chain, key)) in wanted {
        std::fs::create_dir_all(folder)?;
        for (file, bytes) in [("tls.crt", chain), ("tls.key", key)] {
            let path = folder.join(file);
            if std::fs::read(&path).ok().as_ref() == Some(bytes) {
                continue;
            }
            // 0600 from the first byte, replaced whole by rename.
            identity::private_file::write(&path, bytes)?;
        }
    }
    // Secrets no longer named (or deleted) go.
    let Ok(namespaces) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for ns in namespaces.flatten() {
        let Ok(names) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for name in names.flatten() {
            if !wanted.contains_key(&name.path()) {
                std::fs::remove_dir_all(name.path())?;
            }
        }
    }
    Ok(())
}
