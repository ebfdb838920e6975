//! The shop: the small standard mesh the tests run against, as Kubernetes/Istio YAML.
//!
//! The objects are built with small builders ([`Namespace`], [`Pod`], [`Service`],
//! [`Object`]) that render one YAML document each, in the compact flow style the tests
//! read (`metadata: {name: reviews-0, namespace: shop, labels: {app: reviews}}`);
//! [`documents`] joins them into one multi-document file. The usual objects have a
//! function each ([`shop_namespace`], [`reviews_pod`], [`ratings_pod`], [`reviews_service`],
//! [`deny_namespace`]), and a test changes what it needs with the builder methods.
//!
//! This module only writes text: it does not depend on the `config` crate, so `config`'s
//! own tests can use it.

use std::fmt::{self, Display, Formatter, Write as _};

/// The namespace of the shop.
pub const SHOP: &str = "shop";
/// The label that enrols a namespace or pod (`ambient`) or opts a pod out (`none`).
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

/// Joins documents into one YAML file (`---` between them, a newline at the end).
pub fn documents(docs: &[&dyn Display]) -> String {
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let _ = writeln!(out, "{doc}");
    }
    out
}

/// `shop`, enrolled (`istio.io/dataplane-mode: ambient`).
pub fn shop_namespace() -> Namespace {
    Namespace::new(SHOP).label(DATAPLANE_MODE, "ambient")
}

/// `shop/reviews-0`: label `app: reviews`, on `node-a`, service account `reviews`,
/// address 10.1.0.5.
pub fn reviews_pod() -> Pod {
    Pod::new("reviews-0", SHOP)
        .label("app", "reviews")
        .node("node-a")
        .service_account("reviews")
        .ip("10.1.0.5")
}

/// `shop/ratings-0`: on `node-b`, service account `ratings`, address 10.1.0.6.
pub fn ratings_pod() -> Pod {
    Pod::new("ratings-0", SHOP)
        .node("node-b")
        .service_account("ratings")
        .ip("10.1.0.6")
}

/// `shop/reviews`: selects `app: reviews`, VIP 10.96.0.10, port 9080 → 8080.
pub fn reviews_service() -> Service {
    Service::new("reviews", SHOP)
        .selector("app", "reviews")
        .cluster_ip("10.96.0.10")
        .port(Port::new(9080).target("8080"))
}

/// An AuthorizationPolicy `namespace/name` denying every connection from namespace
/// `from`.
pub fn deny_namespace(name: &str, namespace: &str, from: &str) -> Object {
    Object::new(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        name,
        namespace,
    )
    .spec(&format!(
        "{{action: DENY, rules: [{{from: [{{source: {{namespaces: [{from}]}}}}]}}]}}"
    ))
}

/// The three core objects: [`shop_namespace`], [`reviews_pod`], [`reviews_service`].
pub fn shop() -> String {
    documents(&[&shop_namespace(), &reviews_pod(), &reviews_service()])
}

/// A `Namespace`.
#[derive(Debug, Clone)]
pub struct Namespace {
    name: String,
    labels: Vec<(String, String)>,
}

impl Namespace {
    /// `name`, no labels.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            labels: Vec::new(),
        }
    }

    /// Adds a label.
    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
}

impl Display for Namespace {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}{}}}",
            self.name,
            labels_field(&self.labels)
        )
    }
}

/// A `Node`.
#[derive(Debug, Clone)]
pub struct Node {
    name: String,
    pod_cidr: Option<String>,
}

impl Node {
    /// `name`, no pod CIDR.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            pod_cidr: None,
        }
    }

    /// Sets `spec.podCIDR`.
    #[must_use]
    pub fn pod_cidr(mut self, cidr: &str) -> Self {
        self.pod_cidr = Some(cidr.into());
        self
    }
}

impl Display for Node {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}",
            self.name
        )?;
        if let Some(cidr) = &self.pod_cidr {
            write!(f, "\nspec: {{podCIDR: {cidr}}}")?;
        }
        Ok(())
    }
}

/// A `Pod`: metadata, `spec` (node, service account, containers) and `status.podIP`.
#[derive(Debug, Clone)]
pub struct Pod {
    name: String,
    namespace: String,
    labels: Vec<(String, String)>,
    node: Option<String>,
    service_account: Option<String>,
    containers: Vec<Container>,
    ip: Option<String>,
}

impl Pod {
    /// `namespace/name` with nothing else.
    pub fn new(name: &str, namespace: &str) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            labels: Vec::new(),
            node: None,
            service_account: None,
            containers: Vec::new(),
            ip: None,
        }
    }

    /// Adds a label.
    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// Removes every label.
    #[must_use]
    pub fn no_labels(mut self) -> Self {
        self.labels.clear();
        self
    }

    /// Sets `spec.nodeName`.
    #[must_use]
    pub fn node(mut self, node: &str) -> Self {
        self.node = Some(node.into());
        self
    }

    /// Removes `spec.nodeName`.
    #[must_use]
    pub fn no_node(mut self) -> Self {
        self.node = None;
        self
    }

    /// Sets `spec.serviceAccountName`.
    #[must_use]
    pub fn service_account(mut self, account: &str) -> Self {
        self.service_account = Some(account.into());
        self
    }

    /// Removes `spec.serviceAccountName`.
    #[must_use]
    pub fn no_service_account(mut self) -> Self {
        self.service_account = None;
        self
    }

    /// Adds a container.
    #[must_use]
    pub fn container(mut self, container: Container) -> Self {
        self.containers.push(container);
        self
    }

    /// Sets `status.podIP`.
    #[must_use]
    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = Some(ip.into());
        self
    }

    /// Removes `status.podIP` (as a user writes a pod).
    #[must_use]
    pub fn no_ip(mut self) -> Self {
        self.ip = None;
        self
    }
}

impl Display for Pod {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {}, namespace: {}{}}}",
            self.name,
            self.namespace,
            labels_field(&self.labels)
        )?;
        let mut spec = Vec::new();
        if let Some(node) = &self.node {
            spec.push(format!("nodeName: {node}"));
        }
        if let Some(account) = &self.service_account {
            spec.push(format!("serviceAccountName: {account}"));
        }
        if !self.containers.is_empty() {
            let containers: Vec<String> = self.containers.iter().map(ToString::to_string).collect();
            spec.push(format!("containers: [{}]", containers.join(", ")));
        }
        if !spec.is_empty() {
            write!(f, "\nspec: {{{}}}", spec.join(", "))?;
        }
        if let Some(ip) = &self.ip {
            write!(f, "\nstatus: {{podIP: {ip}}}")?;
        }
        Ok(())
    }
}

/// One entry of a pod's `spec.containers`.
#[derive(Debug, Clone)]
pub struct Container {
    name: String,
    command: Vec<String>,
    args: Vec<String>,
    ports: Vec<(String, u16)>,
}

impl Container {
    /// A container `name` with nothing else.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            command: Vec::new(),
            args: Vec::new(),
            ports: Vec::new(),
        }
    }

    /// A container `app` running `bowline echo --port <port>`.
    pub fn echo(port: u16) -> Self {
        Self::new("app").command(&["bowline", "echo", "--port", &port.to_string()])
    }

    /// Sets `command`.
    #[must_use]
    pub fn command(mut self, command: &[&str]) -> Self {
        self.command = command.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Sets `args`.
    #[must_use]
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Adds a named container port.
    #[must_use]
    pub fn port(mut self, name: &str, port: u16) -> Self {
        self.ports.push((name.into(), port));
        self
    }
}

impl Display for Container {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{{name: {}", self.name)?;
        if !self.command.is_empty() {
            write!(f, ", command: {}", list(&self.command))?;
        }
        if !self.args.is_empty() {
            write!(f, ", args: {}", list(&self.args))?;
        }
        if !self.ports.is_empty() {
            let ports: Vec<String> = self
                .ports
                .iter()
                .map(|(name, port)| format!("{{name: {name}, containerPort: {port}}}"))
                .collect();
            write!(f, ", ports: [{}]", ports.join(", "))?;
        }
        f.write_str("}")
    }
}

/// A `Service`.
#[derive(Debug, Clone)]
pub struct Service {
    name: String,
    namespace: String,
    labels: Vec<(String, String)>,
    selector: Vec<(String, String)>,
    cluster_ip: Option<String>,
    ports: Vec<Port>,
}

impl Service {
    /// `namespace/name` with no selector, VIP or ports.
    pub fn new(name: &str, namespace: &str) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            labels: Vec::new(),
            selector: Vec::new(),
            cluster_ip: None,
            ports: Vec::new(),
        }
    }

    /// Adds a label (`istio.io/use-waypoint`…).
    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// Adds a selector label.
    #[must_use]
    pub fn selector(mut self, key: &str, value: &str) -> Self {
        self.selector.push((key.into(), value.into()));
        self
    }

    /// Sets `spec.clusterIP`.
    #[must_use]
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        self.cluster_ip = Some(ip.into());
        self
    }

    /// Removes `spec.clusterIP` (as a user writes a service).
    #[must_use]
    pub fn no_cluster_ip(mut self) -> Self {
        self.cluster_ip = None;
        self
    }

    /// Adds a port.
    #[must_use]
    pub fn port(mut self, port: Port) -> Self {
        self.ports.push(port);
        self
    }

    /// Replaces the ports.
    #[must_use]
    pub fn ports(mut self, ports: impl IntoIterator<Item = Port>) -> Self {
        self.ports = ports.into_iter().collect();
        self
    }
}

impl Display for Service {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {}, namespace: {}",
            self.name, self.namespace
        )?;
        if !self.labels.is_empty() {
            write!(f, ", labels: {}", map(&self.labels))?;
        }
        f.write_str("}")?;
        let mut spec = Vec::new();
        if !self.selector.is_empty() {
            spec.push(format!("selector: {}", map(&self.selector)));
        }
        if let Some(ip) = &self.cluster_ip {
            spec.push(format!("clusterIP: {ip}"));
        }
        if !self.ports.is_empty() {
            let ports: Vec<String> = self.ports.iter().map(ToString::to_string).collect();
            spec.push(format!("ports: [{}]", ports.join(", ")));
        }
        write!(f, "\nspec: {{{}}}", spec.join(", "))
    }
}

/// One entry of a service's `spec.ports`.
#[derive(Debug, Clone)]
pub struct Port {
    name: Option<String>,
    port: u16,
    target: Option<String>,
}

impl Port {
    /// `port`, unnamed, no target port (the same number).
    pub fn new(port: u16) -> Self {
        Self {
            name: None,
            port,
            target: None,
        }
    }

    /// Names the port.
    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets `targetPort`: a number or a container port's name.
    #[must_use]
    pub fn target(mut self, target: &str) -> Self {
        self.target = Some(target.into());
        self
    }
}

impl Display for Port {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        if let Some(name) = &self.name {
            write!(f, "name: {name}, ")?;
        }
        write!(f, "port: {}", self.port)?;
        if let Some(target) = &self.target {
            write!(f, ", targetPort: {target}")?;
        }
        f.write_str("}")
    }
}

/// Any other namespaced object (policies, routes), its `spec` written out as YAML.
#[derive(Debug, Clone)]
pub struct Object {
    api_version: String,
    kind: String,
    name: String,
    namespace: String,
    spec: Option<String>,
}

impl Object {
    /// `kind` `namespace/name` of `api_version`, without a spec.
    pub fn new(api_version: &str, kind: &str, name: &str, namespace: &str) -> Self {
        Self {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.into(),
            spec: None,
        }
    }

    /// Sets the spec: a flow mapping (`{action: DENY}`), or a block that starts with a
    /// newline and is indented by two spaces.
    #[must_use]
    pub fn spec(mut self, spec: &str) -> Self {
        self.spec = Some(spec.into());
        self
    }
}

impl Display for Object {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "apiVersion: {}\nkind: {}\nmetadata: {{name: {}, namespace: {}}}",
            self.api_version, self.kind, self.name, self.namespace
        )?;
        if let Some(spec) = &self.spec {
            if spec.starts_with('\n') {
                write!(f, "\nspec:{}", spec.trim_end())?;
            } else {
                write!(f, "\nspec: {spec}")?;
            }
        }
        Ok(())
    }
}

/// `, labels: {…}`, or nothing without labels.
fn labels_field(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!(", labels: {}", map(labels))
    }
}

fn map(entries: &[(String, String)]) -> String {
    let entries: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{k}: {}", scalar(v)))
        .collect();
    format!("{{{}}}", entries.join(", "))
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| scalar(s)).collect();
    format!("[{}]", items.join(", "))
}

/// A string scalar, quoted where YAML would read it as something else (a number).
fn scalar(s: &str) -> String {
    if s.is_empty() || s.parse::<f64>().is_ok() {
        format!("\"{s}\"")
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_shop_renders_as_compact_documents() {
        assert_eq!(
            shop(),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}\n\
             ---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: reviews-0, namespace: shop, labels: {app: reviews}}\n\
             spec: {nodeName: node-a, serviceAccountName: reviews}\nstatus: {podIP: 10.1.0.5}\n\
             ---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: shop}\n\
             spec: {selector: {app: reviews}, clusterIP: 10.96.0.10, ports: [{port: 9080, targetPort: 8080}]}\n"
        );
    }

    #[test]
    fn numbers_in_string_lists_are_quoted() {
        let pod = Pod::new("p", "ns").container(Container::echo(8080).port("http", 8080));
        assert!(
            pod.to_string().contains(
                "containers: [{name: app, command: [bowline, echo, --port, \"8080\"], ports: [{name: http, containerPort: 8080}]}]"
            ),
            "{pod}"
        );
    }
}
