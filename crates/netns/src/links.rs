//! Links, addresses, routes and sysctls inside namespaces, via iproute2.

use crate::namespace::{Namespace, NetnsError};

/// Creates a veth pair: `a_if` in `a`, `b_if` in `b`, both up.
pub fn veth(a: &Namespace, a_if: &str, b: &Namespace, b_if: &str) -> Result<(), NetnsError> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// Adds `cidr` (e.g. `10.0.1.2/24`) to `dev`.
pub fn add_address(ns: &Namespace, dev: &str, cidr: &str) -> Result<(), NetnsError> {
    ns.ip(&["addr", "add", cidr, "dev", dev])?;
    Ok(())
}

/// Routes `destination` (`default` or a CIDR) via `gateway` or out of `dev`.
pub fn add_route(
    ns: &Namespace,
    destination: &str,
    gateway: Option<&str>,
    dev: Option<&str>,
) -> Result<(), NetnsError> {
    let mut args = vec!["route", "replace", destination];
    if let Some(gw) = gateway {
        args.extend(["via", gw]);
    }
    if let Some(dev) = dev {
        args.extend(["dev", dev]);
    }
    ns.ip(&args)?;
    Ok(())
}

/// Sets a sysctl under `/proc/sys` inside the namespace, e.g.
/// `net/ipv4/ip_forward` = `1`.
pub fn sysctl(ns: &Namespace, key: &str, value: &str) -> Result<(), NetnsError> {
    let script = format!("echo {value} > /proc/sys/{key}");
    ns.exec("sh", &["-c", &script])?;
    Ok(())
}
