//! VirtualService delegation: a root's route `{match: …, delegate: {name, namespace}}`
//! stands for the delegate VirtualService's routes (a VirtualService without hosts), in
//! their order, each with the root route's match conditions merged into its own — as
//! istiod merges them. A delegate route whose conditions contradict the root's (a path
//! outside the root's prefix, another method or port, the same header twice) is left out
//! and reported; a missing delegate, one with hosts, or one that delegates again is
//! reported and the root route routes nothing. Destinations and subsets of a delegate's
//! routes are resolved in the delegate's own namespace.

use config::resources::VirtualService;
use config::resources::traffic as vs;
use xds::l7 as wire;

use super::virtual_service::{action, any_path, http_match};
use super::{Compiled, Index};

/// The entries root route `route` (the `rule`-th of `object`) stands for.
pub(super) fn entries(
    index: &Index<'_>,
    root: &VirtualService,
    route: &vs::HttpRoute,
    to: &vs::Delegate,
    object: &str,
    out: &mut Compiled,
) -> Vec<wire::RouteEntry> {
    let root_ns = root.metadata.namespace();
    let namespace = to.namespace.as_deref().unwrap_or(root_ns);
    let Some(delegate) = index
        .virtual_services
        .iter()
        .find(|v| v.metadata.namespace() == namespace && v.metadata.name == to.name)
    else {
        out.report(
            object.to_owned(),
            format!(
                "delegate VirtualService {namespace}/{} does not exist: the route that delegates to it routes nothing",
                to.name
            ),
        );
        return Vec::new();
    };
    if !delegate.spec.hosts.is_empty() {
        out.report(
            object.to_owned(),
            format!(
                "VirtualService {namespace}/{} has hosts, so it is no delegate: the route that delegates to it routes nothing",
                to.name
            ),
        );
        return Vec::new();
    }
    let delegate_object = format!("VirtualService {namespace}/{}", to.name);
    let roots: Vec<Option<wire::RouteMatch>> = if route.matches.is_empty() {
        vec![None]
    } else {
        route
            .matches
            .iter()
            .map(|m| Some(http_match(index, m)))
            .collect()
    };
    let mut entries = Vec::new();
    for (j, inner) in (0u32..).zip(&delegate.spec.http) {
        if inner.delegate.is_some() {
            continue;
        }
        let action = action(index, namespace, inner, &delegate_object, out);
        let own: Vec<wire::RouteMatch> = if inner.matches.is_empty() {
            vec![any_path()]
        } else {
            inner.matches.iter().map(|m| http_match(index, m)).collect()
        };
        for outer in &roots {
            for m in &own {
                let merged = match outer {
                    None => Ok(m.clone()),
                    Some(outer) => merge(outer, m.clone()),
                };
                match merged {
                    Ok(m) => entries.push(wire::RouteEntry {
                        route: format!("{delegate_object} (delegated by {object})"),
                        rule: j,
                        r#match: Some(m),
                        action: Some(action.clone()),
                        hostnames: Vec::new(),
                    }),
                    Err(why) => out.report(
                        delegate_object.clone(),
                        format!(
                            "http[{j}] conflicts with the match of the route of {object} that delegates to it ({why}): left out there"
                        ),
                    ),
                }
            }
        }
    }
    entries
}

/// `inner` with `outer`'s conditions added, or the condition both set differently.
fn merge(
    outer: &wire::RouteMatch,
    mut inner: wire::RouteMatch,
) -> Result<wire::RouteMatch, &'static str> {
    inner.path = path(outer.path.as_ref(), inner.path.take())?;
    for (mine, theirs, what) in [
        (&mut inner.headers, &outer.headers, "the same header"),
        (
            &mut inner.query_params,
            &outer.query_params,
            "the same query parameter",
        ),
        (
            &mut inner.without_headers,
            &outer.without_headers,
            "the same withoutHeaders",
        ),
    ] {
        for v in theirs {
            match mine.iter().find(|m| m.name == v.name) {
                Some(m) if m != v => return Err(what),
                Some(_) => {}
                None => mine.push(v.clone()),
            }
        }
    }
    inner.method = either(&outer.method, inner.method, "the method")?;
    inner.source_namespace = either(
        &outer.source_namespace,
        inner.source_namespace,
        "the source namespace",
    )?;
    inner.port = match (outer.port, inner.port) {
        (0, p) | (p, 0) => p,
        (a, b) if a == b => a,
        _ => return Err("the port"),
    };
    inner.method_pattern = one(
        outer.method_pattern.as_ref(),
        inner.method_pattern,
        "the method",
    )?;
    inner.authority = one(outer.authority.as_ref(), inner.authority, "the authority")?;
    inner.source_workloads = one(
        outer.source_workloads.as_ref(),
        inner.source_workloads,
        "sourceLabels",
    )?;
    Ok(inner)
}

/// The path both matches allow: the inner one when it lies within the outer one.
fn path(
    outer: Option<&wire::PathMatch>,
    inner: Option<wire::PathMatch>,
) -> Result<Option<wire::PathMatch>, &'static str> {
    use wire::path_match::Kind;
    let any = |p: &wire::PathMatch| p.kind == Kind::StringPrefix as i32 && p.value == "/";
    match (outer, inner) {
        (None, inner) => Ok(inner),
        (Some(o), None) => Ok(Some(o.clone())),
        (Some(o), Some(i)) if any(o) => Ok(Some(i)),
        (Some(o), Some(i)) if any(&i) => Ok(Some(o.clone())),
        (Some(o), Some(i)) => {
            let within = match Kind::try_from(o.kind) {
                Ok(Kind::StringPrefix | Kind::Prefix) => {
                    i.kind != Kind::Regex as i32 && i.value.starts_with(&o.value)
                }
                Ok(Kind::Exact) => i.kind == Kind::Exact as i32 && i.value == o.value,
                _ => false,
            };
            if within { Ok(Some(i)) } else { Err("the uri") }
        }
    }
}

fn either(outer: &str, inner: String, what: &'static str) -> Result<String, &'static str> {
    match (outer.is_empty(), inner.is_empty()) {
        (true, _) => Ok(inner),
        (false, true) => Ok(outer.to_owned()),
        (false, false) if outer == inner => Ok(inner),
        _ => Err(what),
    }
}

fn one<T: Clone + PartialEq>(
    outer: Option<&T>,
    inner: Option<T>,
    what: &'static str,
) -> Result<Option<T>, &'static str> {
    match (outer, inner) {
        (None, inner) => Ok(inner),
        (Some(o), None) => Ok(Some(o.clone())),
        (Some(o), Some(i)) if *o == i => Ok(Some(i)),
        _ => Err(what),
    }
}
