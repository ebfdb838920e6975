//! The waypoint's own resources as its xDS client applies them: the input is
//! [`crate::records`], each one resource body — tag bit 0 clear:
//! `bowline.l7.v1.Authorization`, set: `bowline.l7.v1.RouteTable`. Each is prost-decoded
//! and validated (`policy::Policy::try_from`, `waypoint::routes::Table::try_from`); the
//! survivors are then used as the request path uses them: every policy evaluated for a
//! fixed HTTP request and for the same connection seen only at L4, every route table
//! searched for a few requests, with a backend drawn from each matching rule and its path
//! rewrites applied.

use std::net::{IpAddr, Ipv4Addr};

use policy::{HttpRequest, L4Request, Policy, Request};
use prost::Message;
use waypoint::routes::{PathRewrite, RequestView, Table, replace_prefix, replace_string_prefix};
use xds::l7;

/// One input: one set of resources.
pub fn run(data: &[u8]) {
    let (mut policies, mut tables) = (Vec::new(), Vec::new());
    for (tag, body) in crate::records(data) {
        if tag & 1 == 0 {
            if let Ok(a) = l7::Authorization::decode(body) {
                policies.extend(Policy::try_from(a).ok());
            }
        } else if let Ok(t) = l7::RouteTable::decode(body) {
            tables.extend(Table::try_from(t).ok());
        }
    }
    let peer = crate::id("shop", "frontend");
    let mut headers = http::HeaderMap::new();
    headers.insert("x-user", http::HeaderValue::from_static("alice"));
    headers.append("x-user", http::HeaderValue::from_static("bob"));
    let l4 = L4Request {
        source_identity: Some(&peer),
        source_ip: IpAddr::V4(Ipv4Addr::new(10, 10, 0, 3)),
        destination_ip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 101)),
        destination_port: 9080,
    };
    for (method, path) in [("GET", "/api/v1/users"), ("POST", "/"), ("DELETE", "")] {
        let http = HttpRequest {
            host: "reviews.shop.svc.cluster.local",
            method,
            path,
            headers: &headers,
            remote_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        };
        for p in &policies {
            let _ = p.applies_through(("shop", "waypoint"), Some(("shop", "reviews")));
        }
        let _ = policy::evaluate_request(
            &policies,
            &Request {
                l4,
                http: Some(http),
            },
        );
        let _ = policy::evaluate_request(&policies, &Request { l4, http: None });
        let method = http::Method::from_bytes(method.as_bytes()).unwrap_or(http::Method::GET);
        let view = RequestView {
            method: &method,
            path,
            query: Some("v=2&x"),
            headers: &headers,
            authority: Some("reviews:9080"),
            port: 9080,
            source_uid: Some("Kubernetes//Pod/shop/productpage-0"),
            source_namespace: "shop",
            host: Some("reviews.shop.example"),
        };
        for table in &tables {
            if let Some(ingress) = &table.ingress {
                let _ = ingress.listener_for(Some(path));
            }
            let Some(entry) = table.find(&view) else {
                continue;
            };
            for roll in [0, 1, u64::MAX] {
                let _ = entry.action.backend(roll);
            }
            let (prefix, plain) = entry.matcher.matched_prefix().unwrap_or(("", false));
            if let Some((_, Some(rewrite))) = &entry.action.rewrite {
                let _ = match rewrite {
                    PathRewrite::Full(full) => full.clone(),
                    PathRewrite::Prefix(with) if plain => replace_string_prefix(path, prefix, with),
                    PathRewrite::Prefix(with) => replace_prefix(path, prefix, with),
                    PathRewrite::Regex(pattern, with) => {
                        pattern.replace_all(path, with.as_str()).into_owned()
                    }
                };
            }
        }
    }
}
