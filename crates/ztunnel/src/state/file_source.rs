//! The local configuration file (`bowline ztunnel --config FILE`): workloads, services and
//! policies in YAML (or JSON), in the compiled form of docs/protocols.md with friendlier
//! spelling (IP addresses as text, camelCase keys).
//!
//! The file is turned into the same wire resources the control plane would send and goes
//! through the same validation, so both sources mean the same thing. Unknown keys are
//! refused. An edit that fails to parse or validate is refused with the file position (or
//! the resource path) and the reason; the last good state keeps serving.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use xds::security as sec;
use xds::workload as wire;

use super::convert::{self, ip_bytes};
use super::{Snapshot, Store};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not valid YAML/JSON for this format.
    #[error("{file}:{line}:{column}: {reason}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's reason.
        reason: String,
    },
    /// A resource is invalid or conflicts with another.
    #[error("{file}: {path}: {reason}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Where in the document, e.g. `workloads[2]`.
        path: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    workloads: Vec<FileWorkload>,
    #[serde(default)]
    services: Vec<FileService>,
    #[serde(default)]
    policies: Vec<FilePolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileWorkload {
    uid: String,
    name: String,
    namespace: String,
    #[serde(default)]
    service_account: String,
    #[serde(default)]
    trust_domain: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    addresses: Vec<IpAddr>,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    protocol: FileProtocol,
    waypoint: Option<FileGateway>,
    #[serde(default)]
    services: BTreeMap<String, Vec<FilePort>>,
    #[serde(default)]
    authorization_policies: Vec<String>,
    #[serde(default)]
    status: FileStatus,
    #[serde(default)]
    canonical_name: String,
    #[serde(default)]
    canonical_revision: String,
    #[serde(default)]
    workload_name: String,
    #[serde(default)]
    cluster_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum FileProtocol {
    #[default]
    None,
    Hbone,
}

#[derive(Debug, Default, Deserialize)]
enum FileStatus {
    #[default]
    Healthy,
    Unhealthy,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileGateway {
    address: Option<IpAddr>,
    /// `namespace/hostname` of the waypoint's service.
    service: Option<String>,
    #[serde(default)]
    port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FilePort {
    service_port: u16,
    #[serde(default)]
    target_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileService {
    name: String,
    namespace: String,
    hostname: String,
    #[serde(default)]
    vips: Vec<IpAddr>,
    #[serde(default)]
    ports: Vec<FilePort>,
    waypoint: Option<FileGateway>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FilePolicy {
    name: String,
    namespace: String,
    #[serde(default)]
    scope: FileScope,
    action: FileAction,
    #[serde(default)]
    rules: Vec<FileRule>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Default, Deserialize)]
enum FileScope {
    #[default]
    Global,
    Namespace,
    WorkloadSelector,
}

#[derive(Debug, Deserialize)]
enum FileAction {
    Allow,
    Deny,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileRule {
    #[serde(default)]
    clauses: Vec<FileClause>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileClause {
    matches: Vec<FileMatch>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct FileMatch {
    namespaces: Vec<FileString>,
    not_namespaces: Vec<FileString>,
    principals: Vec<FileString>,
    not_principals: Vec<FileString>,
    source_ips: Vec<IpNet>,
    not_source_ips: Vec<IpNet>,
    destination_ips: Vec<IpNet>,
    not_destination_ips: Vec<IpNet>,
    destination_ports: Vec<u16>,
    not_destination_ports: Vec<u16>,
    service_accounts: Vec<FileServiceAccount>,
    not_service_accounts: Vec<FileServiceAccount>,
}

/// `shop` (exact), or one of `{exact: …}`, `{prefix: …}`, `{suffix: …}`,
/// `{presence: {}}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileString {
    Plain(String),
    Structured(FileStringMatch),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileStringMatch {
    exact: Option<String>,
    prefix: Option<String>,
    suffix: Option<String>,
    presence: Option<Empty>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileServiceAccount {
    namespace: String,
    service_account: String,
}

/// Parses and validates a configuration text; `file` names it in errors.
pub fn parse(text: &str, file: &Path) -> Result<Snapshot, FileSourceError> {
    let config: FileConfig = serde_norway::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        FileSourceError::Parse {
            file: file.to_path_buf(),
            line,
            column,
            reason: e.to_string(),
        }
    })?;
    let invalid = |path: String, reason: String| FileSourceError::Invalid {
        file: file.to_path_buf(),
        path,
        reason,
    };
    let workloads = config
        .workloads
        .into_iter()
        .enumerate()
        .map(|(i, w)| {
            convert::workload(w.into_wire())
                .map_err(|e| invalid(format!("workloads[{i}]"), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let services = config
        .services
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            convert::service(s.into_wire())
                .map_err(|e| invalid(format!("services[{i}]"), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policies = config
        .policies
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            convert::policy(p.into_wire())
                .map_err(|e| invalid(format!("policies[{i}]"), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Snapshot::build(workloads, services, policies).map_err(|e| invalid(e.resource, e.reason))
}

/// Reads and parses `file`.
pub fn load(file: &Path) -> Result<Snapshot, FileSourceError> {
    let text = std::fs::read_to_string(file).map_err(|source| FileSourceError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse(&text, file)
}

/// Loads `file` into `store` now (failing if it is bad: ztunnel must not start on a
/// broken file), then re-reads it every `interval` and applies each good edit. A bad edit
/// is logged with its position and reason, and the last good state stays. Polling the
/// content, rather than watching inodes, also catches editors that replace the file.
pub fn watch(
    file: PathBuf,
    store: Arc<Store>,
    interval: Duration,
) -> Result<tokio::task::JoinHandle<()>, FileSourceError> {
    let text = std::fs::read_to_string(&file).map_err(|source| FileSourceError::Read {
        file: file.clone(),
        source,
    })?;
    store.replace(parse(&text, &file)?);
    tracing::info!(file = %file.display(), "configuration loaded");
    Ok(tokio::spawn(async move {
        let mut last = text;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Ok(text) = tokio::fs::read_to_string(&file).await else {
                continue; // mid-rename or briefly absent; try again next tick
            };
            if text == last {
                continue;
            }
            match parse(&text, &file) {
                Ok(snapshot) => {
                    store.replace(snapshot);
                    tracing::info!(file = %file.display(), "configuration reloaded");
                }
                Err(error) => {
                    tracing::warn!(%error, "configuration edit refused; the previous configuration stays in force");
                }
            }
            last = text;
        }
    }))
}

impl FileWorkload {
    fn into_wire(self) -> wire::Workload {
        wire::Workload {
            uid: self.uid,
            name: self.name,
            namespace: self.namespace,
            service_account: self.service_account,
            trust_domain: self.trust_domain,
            node: self.node,
            addresses: self
                .addresses
                .into_iter()
                .map(|a| ip_bytes(a).into())
                .collect(),
            hostname: self.hostname,
            tunnel_protocol: match self.protocol {
                FileProtocol::None => wire::TunnelProtocol::None,
                FileProtocol::Hbone => wire::TunnelProtocol::Hbone,
            } as i32,
            waypoint: self.waypoint.map(FileGateway::into_wire),
            services: self
                .services
                .into_iter()
                .map(|(k, ports)| {
                    let ports = ports.into_iter().map(FilePort::into_wire).collect();
                    (k, wire::PortList { ports })
                })
                .collect(),
            authorization_policies: self.authorization_policies,
            status: match self.status {
                FileStatus::Healthy => wire::WorkloadStatus::Healthy,
                FileStatus::Unhealthy => wire::WorkloadStatus::Unhealthy,
            } as i32,
            canonical_name: self.canonical_name,
            canonical_revision: self.canonical_revision,
            workload_name: self.workload_name,
            cluster_id: self.cluster_id,
            ..Default::default()
        }
    }
}

impl FileGateway {
    fn into_wire(self) -> wire::GatewayAddress {
        use wire::gateway_address::Destination;
        let destination = match (self.address, self.service) {
            (Some(address), _) => Some(Destination::Address(wire::NetworkAddress {
                address: ip_bytes(address).into(),
                ..Default::default()
            })),
            (None, Some(service)) => {
                let (namespace, hostname) = service.split_once('/').unwrap_or(("", &service));
                Some(Destination::Hostname(wire::NamespacedHostname {
                    namespace: namespace.to_owned(),
                    hostname: hostname.to_owned(),
                }))
            }
            (None, None) => None,
        };
        wire::GatewayAddress {
            destination,
            hbone_mtls_port: u32::from(self.port),
        }
    }
}

impl FilePort {
    fn into_wire(self) -> wire::Port {
        wire::Port {
            service_port: u32::from(self.service_port),
            target_port: u32::from(self.target_port),
            ..Default::default()
        }
    }
}

impl FileService {
    fn into_wire(self) -> wire::Service {
        wire::Service {
            name: self.name,
            namespace: self.namespace,
            hostname: self.hostname,
            addresses: self
                .vips
                .into_iter()
                .map(|a| wire::NetworkAddress {
                    address: ip_bytes(a).into(),
                    ..Default::default()
                })
                .collect(),
            ports: self.ports.into_iter().map(FilePort::into_wire).collect(),
            waypoint: self.waypoint.map(FileGateway::into_wire),
            ..Default::default()
        }
    }
}

impl FilePolicy {
    fn into_wire(self) -> sec::Authorization {
        sec::Authorization {
            name: self.name,
            namespace: self.namespace,
            scope: match self.scope {
                FileScope::Global => sec::Scope::Global,
                FileScope::Namespace => sec::Scope::Namespace,
                FileScope::WorkloadSelector => sec::Scope::WorkloadSelector,
            } as i32,
            action: match self.action {
                FileAction::Allow => sec::Action::Allow,
                FileAction::Deny => sec::Action::Deny,
            } as i32,
            rules: self
                .rules
                .into_iter()
                .map(|r| sec::Rule {
                    clauses: r
                        .clauses
                        .into_iter()
                        .map(|c| sec::Clause {
                            matches: c.matches.into_iter().map(FileMatch::into_wire).collect(),
                        })
                        .collect(),
                })
                .collect(),
            dry_run: self.dry_run,
            ..Default::default()
        }
    }
}

impl FileMatch {
    fn into_wire(self) -> sec::Match {
        let strings = |v: Vec<FileString>| v.into_iter().map(FileString::into_wire).collect();
        let nets = |v: Vec<IpNet>| {
            v.into_iter()
                .map(|n| sec::Address {
                    address: ip_bytes(n.addr()).into(),
                    length: u32::from(n.prefix_len()),
                })
                .collect()
        };
        let ports = |v: Vec<u16>| v.into_iter().map(u32::from).collect();
        let accounts = |v: Vec<FileServiceAccount>| {
            v.into_iter()
                .map(|a| sec::ServiceAccountMatch {
                    namespace: a.namespace,
                    service_account: a.service_account,
                })
                .collect()
        };
        sec::Match {
            namespaces: strings(self.namespaces),
            not_namespaces: strings(self.not_namespaces),
            principals: strings(self.principals),
            not_principals: strings(self.not_principals),
            source_ips: nets(self.source_ips),
            not_source_ips: nets(self.not_source_ips),
            destination_ips: nets(self.destination_ips),
            not_destination_ips: nets(self.not_destination_ips),
            destination_ports: ports(self.destination_ports),
            not_destination_ports: ports(self.not_destination_ports),
            service_accounts: accounts(self.service_accounts),
            not_service_accounts: accounts(self.not_service_accounts),
            extensions: Vec::new(),
        }
    }
}

impl FileString {
    /// A match with none or several kinds set becomes a wire match without a type, which
    /// validation refuses with its path.
    fn into_wire(self) -> sec::StringMatch {
        use sec::string_match::MatchType;
        let match_type = match self {
            Self::Plain(s) => Some(MatchType::Exact(s)),
            Self::Structured(m) => match (m.exact, m.prefix, m.suffix, m.presence) {
                (Some(s), None, None, None) => Some(MatchType::Exact(s)),
                (None, Some(s), None, None) => Some(MatchType::Prefix(s)),
                (None, None, Some(s), None) => Some(MatchType::Suffix(s)),
                (None, None, None, Some(_)) => Some(MatchType::Presence(())),
                _ => None,
            },
        };
        sec::StringMatch { match_type }
    }
}
