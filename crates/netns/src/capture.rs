//! The capture rules of docs/protocols.md, installed inside a pod's namespace.
//!
//! Outbound TCP from the app is redirected to ztunnel's 15001, inbound TCP (except HBONE
//! on 15008) to 15006, DNS to 15053 when the DNS proxy is on. Packets ztunnel sends itself
//! carry mark 0x539 and are never captured again; connections ztunnel answered get
//! connmark 0x111 so replies to a spoofed (transparent) source route back to ztunnel
//! through table 100. Health probes from the node (SNATed from 169.254.7.127) bypass
//! capture.
//!
//! Installation is idempotent (a previous set is removed first) and [`remove`] takes
//! everything out again. Rules are applied with `iptables-restore`; the routing rule and
//! table with iproute2.

use crate::namespace::{Namespace, NetnsError, run_with_input};

/// Mark on packets ztunnel sends from inside the pod: never capture them.
pub const PROXY_MARK: u32 = 0x539;
/// Connection mark of connections ztunnel answered: route replies back to it.
pub const CONNECTION_MARK: u32 = 0x111;
/// Mask of both marks.
pub const MARK_MASK: u32 = 0xfff;
/// Routing table that delivers marked replies locally.
pub const ROUTE_TABLE: &str = "100";
/// Priority of the fwmark rule.
const RULE_PRIORITY: &str = "32764";
/// The node's health-probe source address.
pub const PROBE_ADDRESS: &str = "169.254.7.127";

/// Which rules to install.
#[derive(Debug, Clone, Copy)]
pub struct CaptureSpec {
    /// ztunnel's outbound capture port.
    pub outbound_port: u16,
    /// ztunnel's inbound plaintext port.
    pub inbound_plaintext_port: u16,
    /// ztunnel's HBONE port (never redirected).
    pub hbone_port: u16,
    /// The DNS proxy port, when DNS capture is on.
    pub dns_port: Option<u16>,
}

impl Default for CaptureSpec {
    fn default() -> Self {
        Self {
            outbound_port: 15001,
            inbound_plaintext_port: 15006,
            hbone_port: 15008,
            dns_port: None,
        }
    }
}

impl CaptureSpec {
    /// The `iptables-restore --noflush` input.
    pub fn render(&self) -> String {
        let mark = format!("{PROXY_MARK:#x}/{MARK_MASK:#x}");
        let conn = format!("{CONNECTION_MARK:#x}/{MARK_MASK:#x}");
        let mut nat_out = vec![format!(
            "-A ISTIO_OUTPUT -d {PROBE_ADDRESS}/32 -p tcp -j ACCEPT"
        )];
        if let Some(dns) = self.dns_port {
            nat_out.push(format!(
                "-A ISTIO_OUTPUT ! -o lo -p udp -m mark ! --mark {mark} -m udp --dport 53 -j REDIRECT --to-ports {dns}"
            ));
            nat_out.push(format!(
                "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m tcp --dport 53 -m mark ! --mark {mark} -j REDIRECT --to-ports {dns}"
            ));
        }
        nat_out.push(format!(
            "-A ISTIO_OUTPUT -p tcp -m mark --mark {conn} -j ACCEPT"
        ));
        nat_out.push("-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT".into());
        nat_out.push(format!(
            "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark {mark} -j REDIRECT --to-ports {}",
            self.outbound_port
        ));
        format!(
            "*mangle\n\
             :ISTIO_OUTPUT - [0:0]\n\
             :ISTIO_PRERT - [0:0]\n\
             -A OUTPUT -j ISTIO_OUTPUT\n\
             -A PREROUTING -j ISTIO_PRERT\n\
             -A ISTIO_OUTPUT -m connmark --mark {conn} -j CONNMARK --restore-mark --nfmask {MARK_MASK:#x} --ctmask {MARK_MASK:#x}\n\
             -A ISTIO_PRERT -m mark --mark {mark} -j CONNMARK --set-xmark {conn}\n\
             COMMIT\n\
             *nat\n\
             :ISTIO_OUTPUT - [0:0]\n\
             :ISTIO_PRERT - [0:0]\n\
             -A OUTPUT -j ISTIO_OUTPUT\n\
             -A PREROUTING -j ISTIO_PRERT\n\
             {nat_out}\n\
             -A ISTIO_PRERT -s {PROBE_ADDRESS}/32 -p tcp -j ACCEPT\n\
             -A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m tcp ! --dport {hbone} -m mark ! --mark {mark} -j REDIRECT --to-ports {inbound}\n\
             COMMIT\n",
            nat_out = nat_out.join("\n"),
            hbone = self.hbone_port,
            inbound = self.inbound_plaintext_port,
        )
    }
}

/// Installs capture in `ns`, replacing any earlier set. A pod without capture (the usual
/// case) costs three short processes: the check, `iptables-restore`, and one `ip -batch`
/// for the policy route — enrolment latency is mostly process start-up.
pub fn install(ns: &Namespace, spec: &CaptureSpec) -> Result<(), NetnsError> {
    if is_installed(ns) {
        remove(ns)?;
    }
    restore(ns, &spec.render())?;
    let fwmark = format!("{CONNECTION_MARK:#x}/{MARK_MASK:#x}");
    run_with_input(
        "ip",
        &["-n", ns.name(), "-batch", "-"],
        Some(&format!(
            "rule add fwmark {fwmark} pref {RULE_PRIORITY} lookup {ROUTE_TABLE}\nroute replace local 0.0.0.0/0 dev lo table {ROUTE_TABLE}\n"
        )),
    )?;
    Ok(())
}

/// Removes capture from `ns`; harmless when nothing is installed.
pub fn remove(ns: &Namespace) -> Result<(), NetnsError> {
    for table in ["mangle", "nat"] {
        for (parent, chain) in [("OUTPUT", "ISTIO_OUTPUT"), ("PREROUTING", "ISTIO_PRERT")] {
            // Each step may fail because the chain is absent; that is the goal state.
            let _ = ns.exec("iptables", &["-t", table, "-D", parent, "-j", chain]);
            let _ = ns.exec("iptables", &["-t", table, "-F", chain]);
            let _ = ns.exec("iptables", &["-t", table, "-X", chain]);
        }
    }
    let _ = ns.ip(&["rule", "del", "pref", RULE_PRIORITY]);
    let _ = ns.ip(&["route", "flush", "table", ROUTE_TABLE]);
    Ok(())
}

/// Whether capture is installed in `ns` (the nat jump to ISTIO_OUTPUT exists).
pub fn is_installed(ns: &Namespace) -> bool {
    run_inside(
        ns,
        "iptables",
        &["-t", "nat", "-C", "OUTPUT", "-j", "ISTIO_OUTPUT"],
        None,
    )
    .is_ok()
}

/// Runs `program` from a thread inside `ns` (the child inherits the thread's network
/// namespace), which is cheaper than `ip netns exec` (no mount namespace, no sysfs
/// remount): enrolment latency is mostly process start-up.
fn run_inside(
    ns: &Namespace,
    program: &str,
    args: &[&str],
    input: Option<&str>,
) -> Result<(), NetnsError> {
    let file = ns.open()?;
    crate::namespace::in_netns_blocking(std::os::fd::AsFd::as_fd(&file), ns.name(), || {
        run_with_input(program, args, input)
    })??;
    Ok(())
}

fn restore(ns: &Namespace, rules: &str) -> Result<(), NetnsError> {
    run_inside(ns, "iptables-restore", &["--noflush"], Some(rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_the_protocol() {
        let text = CaptureSpec::default().render();
        assert!(text.contains("-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001"));
        assert!(
            text.contains(
                "! --dport 15008 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15006"
            )
        );
        assert!(text.contains(
            "-A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff"
        ));
        assert!(!text.contains("15053"), "no DNS capture unless asked");
        let dns = CaptureSpec {
            dns_port: Some(15053),
            ..CaptureSpec::default()
        }
        .render();
        assert!(dns.contains("--dport 53 -j REDIRECT --to-ports 15053"));
    }
}
