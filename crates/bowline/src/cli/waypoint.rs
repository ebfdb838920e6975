//! `bowline waypoint …`: `run` is the L7 proxy process of one waypoint Gateway (its flags,
//! also read from the environment the waypoint's pod is given, turned into its
//! configuration); `apply`, `list`, `status` and `delete` manage a lab's waypoints as
//! istioctl's commands do, by writing Gateways (and a namespace label) to its control
//! plane and reading what the lab runs.
//!
//! Owns: these flags, the Gateway a waypoint is written as, and rendering. Must not: proxy
//! anything (the `waypoint` crate) or deploy anything (the lab's controller does).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::terminated;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum WaypointCommand {
    /// Create or update a waypoint (its Gateway) in a namespace of a lab.
    Apply(ApplyArgs),
    /// The waypoints of a lab.
    List(ListArgs),
    /// A waypoint's pods (address, node, ready) and what is bound to it.
    Status(StatusArgs),
    /// Delete waypoints (their Gateways; the lab removes their pods).
    Delete(DeleteArgs),
    /// Run the waypoint process of a Gateway (what a waypoint's pod runs).
    Run(Box<RunArgs>),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    /// The namespace.
    #[arg(short = 'n', long)]
    namespace: String,
    /// The waypoint's name.
    #[arg(long, default_value = "waypoint")]
    name: String,
    /// What traffic it handles (`istio.io/waypoint-for`).
    #[arg(long = "for", value_parser = ["service", "workload", "all", "none"])]
    for_: Option<String>,
    /// Also bind the whole namespace to it (`istio.io/use-waypoint` on the Namespace).
    #[arg(long)]
    enroll_namespace: bool,
    /// Replace a waypoint of that name that differs.
    #[arg(long)]
    overwrite: bool,
    /// Wait until its pod is ready.
    #[arg(long)]
    wait: bool,
    /// The lab (default: the only running lab).
    #[arg(long)]
    lab: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Only this namespace.
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    namespace: Option<String>,
    /// Every namespace (the default).
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// The lab (default: the only running lab).
    #[arg(long)]
    lab: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// The namespace.
    #[arg(short = 'n', long)]
    namespace: String,
    /// The waypoint's name.
    #[arg(long, default_value = "waypoint")]
    name: String,
    /// `json` for a machine-readable answer.
    #[arg(short = 'o', long, value_parser = ["json"])]
    output: Option<String>,
    /// The lab (default: the only running lab).
    #[arg(long)]
    lab: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    /// The namespace.
    #[arg(short = 'n', long)]
    namespace: String,
    /// Waypoints to delete.
    #[arg(required_unless_present = "all")]
    names: Vec<String>,
    /// Every waypoint of the namespace.
    #[arg(long, conflicts_with = "names")]
    all: bool,
    /// The lab (default: the only running lab).
    #[arg(long)]
    lab: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The Gateway this waypoint is, `NAMESPACE/NAME`; its identity is
    /// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME`.
    #[arg(long)]
    gateway: String,
    /// The control plane's xDS (`http://HOST:15010` in a lab, `https://HOST:15012`).
    #[arg(long, env = "BOWLINE_XDS_ADDRESS")]
    xds_address: String,
    /// The control plane's CA service (`https://HOST:15012`).
    #[arg(long, env = "BOWLINE_CA_ADDRESS")]
    ca_address: String,
    /// The mesh root certificate (PEM).
    #[arg(long, env = "BOWLINE_CA_ROOT")]
    ca_root: PathBuf,
    /// The token the CA accepts for this waypoint's node.
    #[arg(long, env = "BOWLINE_TOKEN_FILE")]
    token_file: PathBuf,
    /// This waypoint's address, for its xDS node id.
    #[arg(long, env = "INSTANCE_IP", default_value = "127.0.0.1")]
    instance_ip: String,
    /// Trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// HBONE listener.
    #[arg(long, default_value = "0.0.0.0:15008")]
    hbone_addr: std::net::SocketAddr,
    /// Admin server (`/config_dump`).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: std::net::SocketAddr,
    /// Prometheus metrics (`/stats/prometheus`).
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics_addr: std::net::SocketAddr,
    /// Readiness probe (`/healthz/ready`).
    #[arg(long, default_value = "0.0.0.0:15021")]
    readiness_addr: std::net::SocketAddr,
    /// Seconds live tunnels may finish after SIGTERM.
    #[arg(long, default_value_t = 5.0)]
    drain_seconds: f64,
    /// Where the last accepted config is kept and served from at start (until the control
    /// plane answers).
    #[arg(long, env = "BOWLINE_SNAPSHOT_DIR")]
    snapshot_dir: Option<PathBuf>,
    /// Run as the Gateway's ingress gateway (class `istio`): serve its HTTP/HTTPS
    /// listeners to clients outside the mesh instead of HBONE.
    #[arg(long)]
    ingress: bool,
    /// The service account whose identity to take (default: the Gateway's name).
    #[arg(long)]
    service_account: Option<String>,
    /// An ingress gateway's certificates, one directory per Secret:
    /// `DIR/NAMESPACE/NAME/tls.crt` and `tls.key` (a secret volume).
    #[arg(long, env = "BOWLINE_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
}

pub(crate) async fn run(command: WaypointCommand) -> anyhow::Result<()> {
    match command {
        WaypointCommand::Apply(args) => apply(args).await,
        WaypointCommand::List(args) => list(args).await,
        WaypointCommand::Status(args) => status(args).await,
        WaypointCommand::Delete(args) => delete(args).await,
        WaypointCommand::Run(args) => run_process(*args).await,
    }
}

/// The Gateway a waypoint is.
fn gateway(namespace: &str, name: &str, for_: Option<&str>) -> anyhow::Result<config::Resource> {
    let labels = for_.map_or_else(String::new, |f| {
        format!(", labels: {{{}: {f}}}", config::resources::WAYPOINT_FOR)
    });
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {namespace}{labels}}}\nspec:\n  gatewayClassName: {}\n  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]\n",
        config::resources::WAYPOINT_CLASS
    );
    let mut docs = config::parse_documents(&yaml, "waypoint").map_err(anyhow::Error::msg)?;
    docs.pop()
        .ok_or_else(|| anyhow::anyhow!("no Gateway made for {namespace}/{name}"))
}

#[allow(clippy::print_stdout)]
async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let lab = lab::up::pick(args.lab)?;
    let objects = lab::up::objects(&lab).await?;
    let wanted = gateway(&args.namespace, &args.name, args.for_.as_deref())?;
    let existing = objects.iter().find(|r| {
        matches!(r, config::Resource::Gateway(g)
            if g.metadata.namespace() == args.namespace && g.metadata.name == args.name)
    });
    let differs = existing.is_some_and(|e| match (e, &wanted) {
        (config::Resource::Gateway(have), config::Resource::Gateway(want)) => {
            have.spec != want.spec
                || have.metadata.labels.get(config::resources::WAYPOINT_FOR)
                    != want.metadata.labels.get(config::resources::WAYPOINT_FOR)
        }
        _ => true,
    });
    if differs && !args.overwrite {
        anyhow::bail!(
            "waypoint {}/{} exists and differs; add --overwrite to replace it",
            args.namespace,
            args.name
        );
    }
    let mut documents = vec![wanted];
    if args.enroll_namespace {
        let namespace = objects.iter().find_map(|r| match r {
            config::Resource::Namespace(n) if n.metadata.name == args.namespace => Some(n.clone()),
            _ => None,
        });
        let mut namespace = namespace.unwrap_or(config::resources::Namespace {
            metadata: config::resources::ObjectMeta {
                name: args.namespace.clone(),
                ..Default::default()
            },
        });
        namespace.metadata.labels.insert(
            config::resources::USE_WAYPOINT.to_owned(),
            args.name.clone(),
        );
        documents.push(config::Resource::Namespace(namespace));
    }
    lab::up::submit(&lab, "apply", &documents).await?;
    println!("waypoint {}/{} applied", args.namespace, args.name);
    if args.enroll_namespace {
        println!(
            "namespace {} labelled {}={}",
            args.namespace,
            config::resources::USE_WAYPOINT,
            args.name
        );
    }
    if args.wait {
        let key = format!("{}/{}", args.namespace, args.name);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let status = lab::up::status(&lab).await?;
            let ready = status
                .waypoints
                .iter()
                .find(|w| w.gateway == key)
                .is_some_and(|w| w.pods.iter().any(|(_, _, _, r)| r.is_ok()));
            if ready {
                println!("waypoint {key} is ready");
                break;
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "waypoint {key} is not ready after 60 s; see `bowline waypoint status -n {}`",
                    args.namespace
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

fn ready_text(ready: &Result<(), String>) -> String {
    match ready {
        Ok(()) => "ready".to_owned(),
        Err(why) => format!("NOT READY: {why}"),
    }
}

#[allow(clippy::print_stdout)]
async fn list(args: ListArgs) -> anyhow::Result<()> {
    let lab = lab::up::pick(args.lab)?;
    let status = lab::up::status(&lab).await?;
    println!("{:<16} {:<20} {:<10} BOUND", "NAMESPACE", "NAME", "READY");
    // Ingress gateways are listed by `bowline status`, not here.
    for w in status.waypoints.iter().filter(|w| w.listeners.is_none()) {
        let (ns, name) = w.gateway.split_once('/').unwrap_or(("", &w.gateway));
        if args.namespace.as_deref().is_some_and(|n| n != ns) {
            continue;
        }
        let ready = w.pods.iter().filter(|(_, _, _, r)| r.is_ok()).count();
        println!(
            "{ns:<16} {name:<20} {:<10} {}",
            format!("{ready}/{}", w.pods.len()),
            if w.bound.is_empty() {
                "-".to_owned()
            } else {
                w.bound.join(", ")
            }
        );
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let lab = lab::up::pick(args.lab)?;
    let status = lab::up::status(&lab).await?;
    let key = format!("{}/{}", args.namespace, args.name);
    let Some(w) = status
        .waypoints
        .iter()
        .find(|w| w.gateway == key && w.listeners.is_none())
    else {
        anyhow::bail!(
            "no waypoint {key} in lab {lab}; create one with `bowline waypoint apply -n {}`",
            args.namespace
        );
    };
    if args.output.is_some() {
        let pods: Vec<serde_json::Value> = w
            .pods
            .iter()
            .map(|(pod, ip, node, ready)| {
                serde_json::json!({
                    "name": pod, "address": ip, "node": node,
                    "ready": ready.is_ok(),
                    "reason": ready.as_ref().err(),
                })
            })
            .collect();
        // `status` as the Gateway API shapes a Gateway's.
        let conditions: Vec<serde_json::Value> = w
            .conditions()
            .iter()
            .map(|(kind, holds, reason)| {
                serde_json::json!({
                    "type": kind,
                    "status": if *holds { "True" } else { "False" },
                    "reason": reason,
                })
            })
            .collect();
        let addresses: Vec<serde_json::Value> = w
            .address
            .iter()
            .map(|ip| serde_json::json!({ "type": "IPAddress", "value": ip }))
            .collect();
        let json = serde_json::json!({
            "waypoint": key,
            "status": { "addresses": addresses, "conditions": conditions },
            "pods": pods,
            "bound": w.bound,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!("waypoint {key}");
    println!("  address: {}", w.address.as_deref().unwrap_or("none yet"));
    let conditions: Vec<String> = w
        .conditions()
        .iter()
        .map(|(kind, holds, reason)| {
            format!(
                "{kind}={} ({reason})",
                if *holds { "True" } else { "False" }
            )
        })
        .collect();
    println!("  conditions: {}", conditions.join(", "));
    println!(
        "  bound: {}",
        if w.bound.is_empty() {
            "nothing".to_owned()
        } else {
            w.bound.join(", ")
        }
    );
    if w.pods.is_empty() {
        println!("  no pod: not running (traffic bound to it is refused)");
    }
    for (pod, ip, node, ready) in &w.pods {
        println!("  {pod:<26} {ip:<14} {node:<12} {}", ready_text(ready));
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let lab = lab::up::pick(args.lab)?;
    let objects = lab::up::objects(&lab).await?;
    let documents: Vec<config::Resource> = objects
        .into_iter()
        .filter(|r| {
            matches!(r, config::Resource::Gateway(g)
                if g.metadata.namespace() == args.namespace
                    && (args.all || args.names.contains(&g.metadata.name)))
        })
        .collect();
    let missing: Vec<&String> = args
        .names
        .iter()
        .filter(|n| {
            !documents
                .iter()
                .any(|d| matches!(d, config::Resource::Gateway(g) if &g.metadata.name == *n))
        })
        .collect();
    if !missing.is_empty() {
        let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        anyhow::bail!(
            "no waypoint {} in namespace {}",
            list.join(", "),
            args.namespace
        );
    }
    if documents.is_empty() {
        println!("no waypoint in namespace {}", args.namespace);
        return Ok(());
    }
    lab::up::submit(&lab, "delete", &documents).await?;
    for d in &documents {
        println!("waypoint {}/{} deleted", args.namespace, d.metadata().name);
    }
    Ok(())
}

async fn run_process(args: RunArgs) -> anyhow::Result<()> {
    let Some((namespace, name)) = args.gateway.split_once('/') else {
        anyhow::bail!(
            "--gateway {:?}: write NAMESPACE/NAME of the waypoint's Gateway",
            args.gateway
        );
    };
    let root_pem = std::fs::read_to_string(&args.ca_root)
        .with_context(|| format!("--ca-root {}", args.ca_root.display()))?;
    if !(args.drain_seconds.is_finite() && args.drain_seconds >= 0.0) {
        anyhow::bail!("--drain-seconds must be a number of seconds, 0 or more");
    }
    let config = waypoint::app::Config {
        gateway: (namespace.to_owned(), name.to_owned()),
        trust_domain: args.trust_domain,
        xds_url: args.xds_address,
        ca_url: args.ca_address,
        root_pem,
        token_file: args.token_file,
        instance_ip: args.instance_ip,
        hbone_addr: args.hbone_addr,
        admin_addr: args.admin_addr,
        metrics_addr: args.metrics_addr,
        readiness_addr: args.readiness_addr,
        drain_deadline: Duration::from_secs_f64(args.drain_seconds),
        snapshot_dir: args.snapshot_dir,
        ingress: args.ingress,
        service_account: args.service_account,
        secrets_dir: args.secrets_dir,
    };
    waypoint::app::run(config, terminated()).await?;
    Ok(())
}
