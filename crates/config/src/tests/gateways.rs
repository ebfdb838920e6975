//! Ingress gateways (class `istio`) and the TLS Secrets their HTTPS listeners use.

use super::*;

const INGRESS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
    - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
    - name: https
      port: 443
      protocol: HTTPS
      hostname: '*.shop.example'
      tls: {mode: Terminate, certificateRefs: [{kind: Secret, name: shop-cert}]}
";

fn ingress_with(listener: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: g, namespace: shop}}\nspec:\n  gatewayClassName: istio\n  listeners:\n    - {{name: http, port: 80, protocol: HTTP}}\n    - {listener}\n"
    )
}

#[test]
fn an_ingress_gateway_with_http_and_https_listeners_is_read_typed() {
    let resources = parse_documents(INGRESS, "gw.yaml").unwrap_or_else(|e| panic!("{e}"));
    let Resource::Gateway(gateway) = &resources[0] else {
        panic!("{resources:?}")
    };
    let https = &gateway.spec.listeners[1];
    assert_eq!(https.hostname.as_deref(), Some("*.shop.example"));
    let tls = https.tls.as_ref().unwrap();
    assert_eq!(tls.certificate_refs[0].name, "shop-cert");
    assert!(gateway.spec.without_effect().is_empty());
}

#[test]
fn ingress_listeners_bowline_cannot_serve_are_refused_naming_the_field() {
    for (listener, path, hint) in [
        (
            "{name: tls, port: 443, protocol: HTTPS, tls: {mode: Passthrough, certificateRefs: [{name: c}]}}",
            "spec.listeners[1].tls.mode",
            "Passthrough is not supported",
        ),
        (
            "{name: tls, port: 443, protocol: HTTPS}",
            "spec.listeners[1].tls",
            "needs tls.certificateRefs",
        ),
        (
            "{name: tcp, port: 5432, protocol: TCP}",
            "spec.listeners[1].protocol",
            "HTTP and HTTPS",
        ),
        (
            "{name: other, port: 80, protocol: HTTPS, tls: {certificateRefs: [{name: c}]}}",
            "spec.listeners[1].protocol",
            "one port serves one protocol",
        ),
        (
            "{name: http, port: 8080, protocol: HTTP}",
            "spec.listeners[1].name",
            "must be unique",
        ),
        (
            "{name: again, port: 80, protocol: HTTP}",
            "spec.listeners[1].hostname",
            "its own hostname",
        ),
        (
            "{name: h, port: 8080, protocol: HTTP, hostname: '10.0.0.1'}",
            "spec.listeners[1].hostname",
            "not host names",
        ),
        (
            "{name: h, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}",
            "spec.listeners[1].allowedRoutes.namespaces.from",
            "Selector is not supported",
        ),
        (
            "{name: h, port: 15008, protocol: HTTP}",
            "spec.listeners[1].port",
            "the gateway's own ports",
        ),
        (
            "{name: h, port: 443, protocol: HTTPS, tls: {certificateRefs: [{kind: ConfigMap, name: c}]}}",
            "spec.listeners[1].tls.certificateRefs[0]",
            "only core Secrets",
        ),
    ] {
        let e = error(&ingress_with(listener));
        assert_eq!(e.path, path, "{e}");
        assert!(e.message.contains(hint), "{e}");
    }
}

#[test]
fn a_tls_secret_must_hold_a_pem_chain_and_key_and_other_secrets_are_set_aside() {
    let cert = test_support::WebCertificate::new(&["shop.example"]);
    let good = cert.secret_yaml("shop", "shop-cert");
    let resources = parse_documents(&good, "s.yaml").unwrap_or_else(|e| panic!("{e}"));
    let Resource::Secret(secret) = &resources[0] else {
        panic!("{resources:?}")
    };
    assert_eq!(secret.value("tls.crt"), Some(cert.chain_pem.into_bytes()));
    let e = error(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: shop}\ntype: kubernetes.io/tls\nstringData: {tls.crt: nope, tls.key: nope}\n",
    );
    assert_eq!(e.path, "stringData.tls.crt", "{e}");
    let e = error(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: shop}\ntype: kubernetes.io/tls\ndata: {tls.crt: '!!'}\n",
    );
    assert_eq!(e.path, "data.tls.crt", "{e}");
    assert!(e.message.contains("not base64"), "{e}");
    let others = parse_documents(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: shop}\ntype: Opaque\ndata: {password: aHVudGVyMg==}\n",
        "s.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        others.is_empty(),
        "an Opaque Secret is not the mesh's: {others:?}"
    );
}
