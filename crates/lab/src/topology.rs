//! Pods as network namespaces joined to a router namespace by veth pairs, with /32
//! addresses and a link-local gateway (as common CNIs do). Everything is removed when the
//! [`Fabric`] drops, also when a test or benchmark fails half-way.

use std::net::IpAddr;

use netns::{Namespace, NetnsError, links};

/// The router's address on its loopback; pods use it as their gateway.
pub const GATEWAY: &str = "169.254.1.1";

/// One pod's network.
#[derive(Debug)]
pub struct PodNet {
    /// Its namespace.
    pub ns: Namespace,
    /// Its address.
    pub ip: IpAddr,
    /// The router-side interface.
    pub router_if: String,
}

/// A router namespace and the pods attached to it.
#[derive(Debug)]
pub struct Fabric {
    // Pods before the router: they are deleted first.
    pods: Vec<PodNet>,
    router: Namespace,
    prefix: String,
}

impl Fabric {
    /// A router namespace named `<prefix>r` (forwarding on, gateway address on `lo`).
    pub fn new(prefix: &str) -> Result<Self, NetnsError> {
        let router = Namespace::create(&format!("{prefix}r"))?;
        links::sysctl(&router, "net/ipv4/ip_forward", "1")?;
        links::add_address(&router, "lo", &format!("{GATEWAY}/32"))?;
        Ok(Self {
            pods: Vec::new(),
            router,
            prefix: prefix.to_owned(),
        })
    }

    /// Adds a pod namespace with address `ip`; returns its index.
    pub fn add_pod(&mut self, ip: IpAddr) -> Result<usize, NetnsError> {
        let n = self.pods.len();
        let ns = Namespace::create(&format!("{}p{n}", self.prefix))?;
        let router_if = format!("{}v{n}", self.prefix);
        links::veth(&ns, "eth0", &self.router, &router_if)?;
        links::add_address(&ns, "eth0", &format!("{ip}/32"))?;
        links::add_route(&ns, GATEWAY, None, Some("eth0"))?;
        links::add_route(&ns, "default", Some(GATEWAY), Some("eth0"))?;
        links::add_route(&self.router, &format!("{ip}/32"), None, Some(&router_if))?;
        self.pods.push(PodNet { ns, ip, router_if });
        Ok(n)
    }

    /// Pod `i`, if it exists.
    pub fn pod(&self, i: usize) -> Option<&PodNet> {
        self.pods.get(i)
    }

    /// The router namespace.
    pub fn router(&self) -> &Namespace {
        &self.router
    }
}
