//! VirtualService and DestinationRule: read typed with Istio's fields, and what Bowline
//! does not implement refused naming the field.

use super::*;

const SERVICE: &str = "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
    - match: [{uri: {prefix: /api}, method: {regex: GET|HEAD}, port: 9080}]
      rewrite: {uriRegexRewrite: {match: ^/api/(.*), rewrite: /\\1}}
      retries: {attempts: 2, retryOn: '5xx,reset', perTryTimeout: 1s}
      fault:
        delay: {fixedDelay: 100ms, percentage: {value: 50}}
        abort: {httpStatus: 503, percentage: {value: 10}}
      corsPolicy: {allowOrigins: [{exact: https://shop.example}], allowMethods: [GET], maxAge: 24h}
      headers: {request: {set: {x-a: b}}, response: {remove: [server]}}
      mirrors: [{destination: {host: reviews, subset: v2}, percentage: {value: 1.5}}]
      route: [{destination: {host: reviews, subset: v1}}]
    - directResponse: {status: 503, body: {bytes: aGVsbG8=}}
";

#[test]
fn a_virtual_service_with_every_supported_part_is_read_typed() {
    let resources = parse_documents(SERVICE, "vs.yaml").unwrap_or_else(|e| panic!("{e}"));
    let Resource::VirtualService(service) = &resources[0] else {
        panic!("{resources:?}")
    };
    let http = &service.spec.http[0];
    assert_eq!(
        http.fault
            .as_ref()
            .unwrap()
            .delay
            .as_ref()
            .unwrap()
            .percentage
            .as_ref()
            .unwrap()
            .per_million(),
        500_000
    );
    assert_eq!(
        service.spec.http[1]
            .direct_response
            .as_ref()
            .unwrap()
            .body
            .as_ref()
            .unwrap()
            .decoded(),
        Ok(b"hello".to_vec())
    );
}

#[test]
fn what_bowline_does_not_route_is_refused_naming_the_field() {
    let cases = [
        (
            SERVICE.replace(
                "  hosts: [reviews]\n",
                "  hosts: [reviews]\n  gateways: [istio-system/ingress]\n",
            ),
            "spec.gateways[0]",
            "only `mesh` is supported yet",
        ),
        (
            format!(
                "{SERVICE}  tcp: [{{match: [{{destinationSubnets: [10.0.0.0/8]}}], route: [{{destination: {{host: db}}}}]}}]\n"
            ),
            "spec.tcp[0].match[0].destinationSubnets",
            "not supported",
        ),
        (
            format!("{SERVICE}  tcp: [{{route: []}}]\n"),
            "spec.tcp[0].route",
            "needs a destination",
        ),
        (
            SERVICE.replace("5xx,reset", "5xx,sometimes"),
            "spec.http[0].retries.retryOn",
            "\"sometimes\" is not a retry condition",
        ),
        (
            SERVICE.replace("httpStatus: 503, percentage", "http2Error: x, percentage"),
            "spec.http[0].fault.abort.http2Error",
            "not supported",
        ),
        (
            SERVICE.replace("fixedDelay: 100ms", "fixedDelay: soon"),
            "spec.http[0].fault.delay.fixedDelay",
            "is not a duration",
        ),
        (
            SERVICE.replace(
                "    - directResponse",
                "    - redirect: {uri: /x}\n      directResponse",
            ),
            "spec.http[1]",
            "exclude each other",
        ),
        (
            SERVICE.replace("body: {bytes: aGVsbG8=}", "body: {bytes: '%%%'}"),
            "spec.http[1].directResponse.body.bytes",
            "not base64",
        ),
        (
            SERVICE.replace("match: ^/api/(.*)", "match: ^/api/(.*"),
            "spec.http[0].rewrite.uriRegexRewrite.match",
            "not a regular expression",
        ),
        (
            SERVICE.replace(
                "route: [{destination: {host: reviews, subset: v1}}]",
                "delegate: {name: other}",
            ),
            "spec.http[0]",
            "takes only `match`",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: d, namespace: shop}\nspec:\n  http: [{delegate: {name: other}}]\n".to_owned(),
            "spec.http[0].delegate",
            "cannot delegate again",
        ),
        (
            SERVICE.replace("port: 9080}]", "port: 9080, scheme: {exact: https}}]"),
            "spec.http[0].match[0].scheme",
            "not supported",
        ),
    ];
    for (text, path, message) in cases {
        let e = error(&text);
        assert_eq!(e.path, path, "{e}");
        assert!(e.message.contains(message), "{message}: {e}");
    }
    let rule = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  workloadSelector: {matchLabels: {app: reviews}}
";
    let e = error(rule);
    assert_eq!(e.path, "spec.workloadSelector", "{e}");
}
