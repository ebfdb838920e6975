//! A nat chain owned whole by its caller: the lab's kube-proxy keeps the Service VIPs of
//! its cluster network in one (`BOWLINE-SERVICES`, hooked from PREROUTING), replaced in
//! one `iptables-restore` so a change is atomic and a reader never sees half a set.
//!
//! Owns: writing that chain and its hook. Must not: decide what goes in it.

use crate::NetnsError;
use crate::namespace::Namespace;

/// Makes chain `chain` of the nat table in `ns` exactly `rules` (each an `iptables` rule
/// spec without `-A chain`), hooked once at the top of `hook` (`PREROUTING`, `OUTPUT`).
pub fn replace_chain(
    ns: &Namespace,
    chain: &str,
    hook: &str,
    rules: &[String],
) -> Result<(), NetnsError> {
    let mut text = format!("*nat\n:{chain} - [0:0]\n");
    for rule in rules {
        text.push_str(&format!("-A {chain} {rule}\n"));
    }
    text.push_str("COMMIT\n");
    // Declaring the chain under --noflush empties it first: the new set replaces the old
    // in one commit, and no other chain is touched.
    ns.exec_with_input("iptables-restore", &["--noflush"], &text)?;
    if ns
        .exec("iptables", &["-t", "nat", "-C", hook, "-j", chain])
        .is_err()
    {
        ns.exec("iptables", &["-t", "nat", "-I", hook, "1", "-j", chain])?;
    }
    Ok(())
}
