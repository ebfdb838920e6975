//! What the lab runs for each container of a pod: its `command` + `args` (`bowline …`
//! is this binary), or — when the container names an image the lab cannot run (no
//! `command`, or a command this host does not have) — a **stand-in**: `bowline echo`
//! listening on each `containerPort`, HTTP (HTTP/1.1 and h2c) where the port speaks HTTP
//! and a TCP echo otherwise, answering with the pod, its `version` label and the request
//! like the demo's echo. A port speaks HTTP when its name or the `name`/`appProtocol` of
//! a port of a Service selecting the pod starts with `http`, `grpc` or is `h2c`
//! (Istio's protocol selection), or when it is one of the usual HTTP ports
//! ([`HTTP_PORTS`]). The pod's annotation [`UPSTREAMS`] gives stand-ins URLs to call on
//! every request, so a sample's call graph is played out through the mesh.
//!
//! Owns: that decision and the stand-in's command line. Must not: start anything.

use std::path::Path;

use config::Resource;
use config::resources as k8s;

/// Annotation on a pod (or a workload's template): comma-separated URLs its stand-ins
/// call on every HTTP request, answers included in theirs.
pub const UPSTREAMS: &str = "bowline.io/stand-in-upstreams";

/// Ports taken to speak HTTP when nothing names their protocol.
pub(super) const HTTP_PORTS: [u16; 7] = [80, 3000, 5000, 8000, 8080, 9080, 9090];

/// What runs for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Launch {
    /// The program and its arguments (the first is this binary for `bowline …`).
    pub(super) argv: Vec<String>,
    /// Its environment beyond the pod's own (`POD_NAME`, `POD_NAMESPACE`).
    pub(super) env: Vec<(String, String)>,
    /// Why it is a stand-in (for `status`), or `None` when the container's own command runs.
    pub(super) stand_in: Option<String>,
}

/// What to run for `container` of `pod`, given the objects of the lab (its Services) and
/// the `bowline` binary; `Err` says why nothing runs (a stand-in with no port to serve).
pub(super) fn launch(
    pod: &k8s::Pod,
    container: &k8s::Container,
    objects: &[Resource],
    binary: &Path,
) -> Result<Launch, String> {
    let mut argv: Vec<String> = container
        .command
        .iter()
        .chain(&container.args)
        .cloned()
        .collect();
    let env: Vec<(String, String)> = container
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    let image = container.image.as_deref().unwrap_or("(no image)");
    let why = match container.command.first() {
        Some(program) if program == "bowline" => {
            argv[0] = binary.display().to_string();
            return Ok(Launch {
                argv,
                env,
                stand_in: None,
            });
        }
        Some(program) if on_this_host(program) => {
            return Ok(Launch {
                argv,
                env,
                stand_in: None,
            });
        }
        Some(program) => format!("stand-in for image {image} ({program:?} is not on this host)"),
        None => format!("stand-in for image {image}"),
    };
    let (http, tcp): (Vec<u16>, Vec<u16>) = container
        .ports
        .iter()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .map(|p| p.container_port)
        .partition(|port| speaks_http(pod, container, *port, objects));
    if http.is_empty() && tcp.is_empty() {
        return Err(format!(
            "{why}: it declares no TCP containerPort, so nothing is run"
        ));
    }
    let mut argv = vec![binary.display().to_string(), "echo".to_owned()];
    for port in &http {
        argv.extend(["--port".to_owned(), port.to_string()]);
    }
    for port in &tcp {
        argv.extend(["--tcp-port".to_owned(), port.to_string()]);
    }
    if !http.is_empty() {
        for url in upstreams(pod) {
            argv.extend(["--upstream".to_owned(), url]);
        }
    }
    let mut env = env;
    if let Some(version) = pod
        .metadata
        .labels
        .get("version")
        .or_else(|| pod.metadata.labels.get("app.kubernetes.io/version"))
    {
        env.push(("POD_VERSION".into(), version.clone()));
    }
    let ports = |kind: &str, ports: &[u16]| {
        (!ports.is_empty()).then(|| {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            format!("{kind} {}", list.join(", "))
        })
    };
    let serving: Vec<String> = [ports("HTTP", &http), ports("TCP echo", &tcp)]
        .into_iter()
        .flatten()
        .collect();
    Ok(Launch {
        argv,
        env,
        stand_in: Some(format!("{why}: {}", serving.join("; "))),
    })
}

/// The URLs of the pod's [`UPSTREAMS`] annotation.
fn upstreams(pod: &k8s::Pod) -> Vec<String> {
    pod.metadata
        .annotations
        .get(UPSTREAMS)
        .map(|list| {
            list.split([',', '\n', ' '])
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `program` can be started here: an existing path, or a name on `$PATH`.
fn on_this_host(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Istio's protocol selection: a name or `appProtocol` of `http…`, `grpc…` or `h2c`.
fn names_http(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("http")
        || name.starts_with("grpc")
        || name == "h2c"
        || name == "kubernetes.io/h2c"
}

/// Whether `port` of `container` speaks HTTP (see the module's docs).
fn speaks_http(
    pod: &k8s::Pod,
    container: &k8s::Container,
    port: u16,
    objects: &[Resource],
) -> bool {
    let declared = container.ports.iter().find(|p| p.container_port == port);
    let port_name = declared.and_then(|p| p.name.as_deref());
    if port_name.is_some_and(names_http) {
        return true;
    }
    let ns = pod.metadata.namespace();
    let by_service = objects.iter().any(|r| {
        let Resource::Service(service) = r else {
            return false;
        };
        let spec = &service.spec;
        let selects = service.metadata.namespace() == ns
            && !spec.selector.is_empty()
            && spec
                .selector
                .iter()
                .all(|(k, v)| pod.metadata.labels.get(k) == Some(v));
        selects
            && spec.ports.iter().any(|p| {
                let targets = match &p.target_port {
                    None => p.port == port,
                    Some(target) => {
                        target.port() == Some(port)
                            || port_name.is_some_and(|n| target.to_string() == n)
                    }
                };
                targets
                    && (p.name.as_deref().is_some_and(names_http)
                        || p.app_protocol.as_deref().is_some_and(names_http))
            })
    });
    by_service || HTTP_PORTS.contains(&port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(yaml: &str) -> Vec<Resource> {
        config::parse_documents_noting(yaml, "test.yaml")
            .expect("parses")
            .resources
    }

    fn pod_of(objects: &[Resource]) -> &k8s::Pod {
        objects
            .iter()
            .find_map(|r| match r {
                Resource::Pod(p) => Some(p),
                _ => None,
            })
            .expect("a pod")
    }

    const SAMPLE: &str = "apiVersion: v1
kind: Pod
metadata:
  name: productpage-0
  labels: {app: productpage, version: v1}
  annotations: {bowline.io/stand-in-upstreams: 'http://details:9080/, http://reviews:9080/'}
spec:
  containers:
    - name: app
      image: example/productpage:1
      ports: [{containerPort: 9080}, {containerPort: 7000}, {containerPort: 7001}, {containerPort: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: productpage}
spec:
  selector: {app: productpage}
  ports: [{name: metrics, port: 7000, appProtocol: http}, {name: tcp, port: 7001}]
";

    #[test]
    fn an_image_without_a_command_gets_a_stand_in_serving_its_ports() {
        let objects = objects(SAMPLE);
        let pod = pod_of(&objects);
        let launch = launch(
            pod,
            &pod.spec.containers[0],
            &objects,
            Path::new("/bin/bowline"),
        )
        .expect("a stand-in");
        assert_eq!(
            launch.argv,
            [
                "/bin/bowline",
                "echo",
                "--port",
                "9080",
                "--port",
                "7000",
                "--tcp-port",
                "7001",
                "--upstream",
                "http://details:9080/",
                "--upstream",
                "http://reviews:9080/"
            ]
        );
        assert_eq!(launch.env, [("POD_VERSION".to_owned(), "v1".to_owned())]);
        assert_eq!(
            launch.stand_in.as_deref(),
            Some("stand-in for image example/productpage:1: HTTP 9080, 7000; TCP echo 7001")
        );
    }

    #[test]
    fn a_command_this_host_has_runs_and_one_it_lacks_gets_a_stand_in() {
        let objects = objects(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - {name: a, image: busybox, command: [sleep, infinity]}\n    - {name: b, image: example/httpbin, command: [/usr/local/bin/go-httpbin], args: [-port, '8080'], ports: [{name: web, containerPort: 8080}]}\n    - {name: c, image: example/worker}\n",
        );
        let pod = pod_of(&objects);
        let binary = Path::new("/bin/bowline");
        let own = launch(pod, &pod.spec.containers[0], &objects, binary).expect("runs");
        assert_eq!(
            (own.argv.as_slice(), own.stand_in),
            (["sleep", "infinity"].map(String::from).as_slice(), None)
        );
        let missing = launch(pod, &pod.spec.containers[1], &objects, binary).expect("stand-in");
        assert_eq!(missing.argv[2..], ["--port", "8080"]);
        assert!(
            missing
                .stand_in
                .as_deref()
                .is_some_and(|s| s.contains("\"/usr/local/bin/go-httpbin\" is not on this host")),
            "{missing:?}"
        );
        let idle = launch(pod, &pod.spec.containers[2], &objects, binary).expect_err("no ports");
        assert!(idle.contains("declares no TCP containerPort"), "{idle}");
    }
}
