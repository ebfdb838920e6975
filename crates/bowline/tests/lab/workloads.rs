//! Users' own YAML in the lab: the bookinfo-shaped sample (`examples/bookinfo`) of
//! Deployments whose images the lab cannot run, played by stand-ins through the mesh;
//! live scaling, rollouts and deletion; a StatefulSet, a DaemonSet and a Job beside it.

use std::time::{Duration, Instant};

use test_support::root_or_skip;

use super::{Lab, text};

/// A StatefulSet of an image (a TCP stand-in), a DaemonSet and a Job that run commands.
const MORE_CONTROLLERS: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: cache, namespace: default}
spec:
  serviceName: cache
  replicas: 2
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache}}
    spec:
      containers: [{name: redis, image: redis:7, ports: [{name: redis, containerPort: 6379}]}]
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: default}
spec: {selector: {app: cache}, ports: [{name: tcp-redis, port: 6379}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: default}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy: {type: RollingUpdate}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: agent, image: example/agent, command: [sleep, infinity]}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: default}
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: example/migrate, command: [sh, -c, 'echo migrated']}]
";

/// Waits (up to 30 s) until `bowline status` satisfies `ok`; returns it.
fn status_until(lab: &Lab, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = text(&lab.bowline(&["status", "--name", &lab.name]));
        if ok(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}, within 30 s:\n{status}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The `default/…` pods of `prefix` in a status text.
fn pods_named(status: &str, prefix: &str) -> Vec<String> {
    let mut pods: Vec<String> = status
        .split_whitespace()
        .filter(|w| w.starts_with(&format!("default/{prefix}")))
        .map(str::to_owned)
        .collect();
    pods.sort();
    pods.dedup();
    pods
}

/// `bowline call URL` from the curl Deployment's pod, as JSON.
fn call(lab: &Lab, url: &str) -> serde_json::Value {
    let (ok, body) = lab.call("default/deploy/curl", url);
    assert!(ok, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

#[test]
fn bookinfo_as_users_write_it_runs_its_call_graph_and_deployments_scale_and_roll_live() {
    if !root_or_skip(
        "bookinfo_as_users_write_it_runs_its_call_graph_and_deployments_scale_and_roll_live",
    ) {
        return;
    }
    let lab = Lab::new("t13bk", MORE_CONTROLLERS);
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bookinfo");
    for file in ["namespace.yaml", "bookinfo.yaml", "curl.yaml"] {
        std::fs::copy(sample.join(file), lab.dir.path().join(file)).unwrap();
    }
    let out = lab.up();
    assert!(out.status.success(), "bowline up: {}", text(&out));
    let status = text(&lab.bowline(&["status", "--name", &lab.name]));
    // Pods named as Kubernetes names them, grouped by owner, stand-ins said as such.
    for deployment in [
        "productpage-v1",
        "details-v1",
        "reviews-v1",
        "reviews-v2",
        "ratings-v1",
    ] {
        assert!(
            status.contains(&format!("Deployment default/{deployment} (1 pods)")),
            "{status}"
        );
        let pods = pods_named(&status, &format!("{deployment}-"));
        assert_eq!(pods.len(), 1, "{deployment}: {status}");
        let rest = pods[0]
            .strip_prefix(&format!("default/{deployment}-"))
            .unwrap();
        let (hash, suffix) = rest.split_once('-').unwrap();
        assert!(hash.len() >= 6 && suffix.len() == 5, "{rest}");
    }
    assert!(
        status.contains(
            "reviews: stand-in for image istio/examples-bookinfo-reviews-v2:1.20.2: HTTP 9080"
        ),
        "{status}"
    );
    assert!(
        status.contains("redis: stand-in for image redis:7: TCP echo 6379"),
        "{status}"
    );
    assert_eq!(
        pods_named(&status, "cache-"),
        ["default/cache-0", "default/cache-1"]
    );
    assert_eq!(
        pods_named(&status, "agent-").len(),
        2,
        "one per node: {status}"
    );
    assert_eq!(pods_named(&status, "migrate-").len(), 1, "{status}");
    assert!(status.contains("captured (in mesh)"), "{status}");

    // productpage → details and reviews; reviews v2/v3 → ratings, v1 calls nobody.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 3 {
        assert!(Instant::now() < deadline, "reviews versions seen: {seen:?}");
        let page = call(&lab, "http://productpage:9080/productpage");
        assert_eq!(page["version"], "v1", "{page}");
        let [details, reviews] = [0, 1].map(|i| page["upstreams"][i].clone());
        assert_eq!(details["status"], 200, "{page}");
        assert!(
            details["body"]["pod"]
                .as_str()
                .unwrap()
                .starts_with("details-v1-"),
            "{page}"
        );
        assert_eq!(reviews["status"], 200, "{page}");
        let version = reviews["body"]["version"].as_str().unwrap().to_owned();
        let ratings = &reviews["body"]["upstreams"];
        if version == "v1" {
            assert_eq!(ratings, &serde_json::json!([]), "{page}");
        } else {
            assert_eq!(ratings[0]["status"], 200, "{page}");
            assert!(
                ratings[0]["body"]["pod"]
                    .as_str()
                    .unwrap()
                    .starts_with("ratings-v1-"),
                "{page}"
            );
        }
        seen.insert(version);
    }

    // Istio's request routing: jason's requests reach reviews v2, everyone else's v1.
    let walk = sample.join("walkthrough");
    let out = lab.bowline(&[
        "apply",
        "--name",
        &lab.name,
        "--wait",
        "-f",
        walk.join("reviews-routing.yaml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let reviews_version = |user: Option<&str>| -> String {
        let mut args = vec![
            "exec",
            "--name",
            &lab.name,
            "default/deploy/curl",
            "--",
            "bowline",
            "call",
        ];
        let header = user.map(|u| format!("end-user: {u}"));
        if let Some(header) = &header {
            args.extend(["-H", header.as_str()]);
        }
        args.push("http://productpage:9080/productpage");
        let out = lab.bowline(&args);
        let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        page["upstreams"][1]["body"]["version"]
            .as_str()
            .unwrap_or("-")
            .to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while reviews_version(Some("jason")) != "v2" || reviews_version(None) != "v1" {
        assert!(
            Instant::now() < deadline,
            "routing by user never took effect"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for _ in 0..5 {
        assert_eq!(reviews_version(Some("jason")), "v2");
        assert_eq!(reviews_version(None), "v1");
    }

    // Scaled up live: two more pods, and the Service spreads calls over all three.
    let out = lab.bowline(&[
        "apply",
        "--name",
        &lab.name,
        "-f",
        walk.join("details-three-replicas.yaml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let status = status_until(&lab, "three details pods in the mesh", |s| {
        s.contains("Deployment default/details-v1 (3 pods)")
            && s.lines()
                .filter(|l| l.contains("default/details-v1-") && l.contains("captured (in mesh)"))
                .count()
                == 3
    });
    let three = pods_named(&status, "details-v1-");
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let details = call(&lab, "http://details:9080/details/0");
        answered.insert(format!("default/{}", details["pod"].as_str().unwrap()));
        if answered.len() == 3 {
            break;
        }
    }
    assert_eq!(answered.into_iter().collect::<Vec<_>>(), three);

    // A new template rolls: a new pod with a new hash first, the old one then stops.
    let old = pods_named(&status, "reviews-v1-");
    let out = lab.bowline(&[
        "apply",
        "--name",
        &lab.name,
        "-f",
        walk.join("reviews-v1-new-image.yaml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let status = status_until(&lab, "reviews-v1 rolled to its new template", |s| {
        let now = pods_named(s, "reviews-v1-");
        now.len() == 1 && now != old && s.contains("examples-bookinfo-reviews-v1:1.20.3")
    });
    let new = pods_named(&status, "reviews-v1-");
    let hash = |pod: &str| pod.split('-').nth(2).unwrap().to_owned();
    assert_ne!(hash(&new[0]), hash(&old[0]));
    let old_ns = format!("bl-{}-p-{}", lab.name, old[0].replace('/', "-"));
    assert!(
        !std::path::Path::new("/run/netns").join(&old_ns).exists(),
        "{old_ns} remains"
    );

    // Scaled down again, and a StatefulSet scaled down loses its highest ordinal.
    let out = lab.config(
        "apply",
        "scale-down.yaml",
        Some(
            &std::fs::read_to_string(sample.join("bookinfo.yaml"))
                .unwrap()
                .replace(
                    "image: istio/examples-bookinfo-reviews-v1:1.20.2",
                    "image: istio/examples-bookinfo-reviews-v1:1.20.3",
                ),
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = lab.config(
        "apply",
        "cache.yaml",
        Some(&MORE_CONTROLLERS.replace("replicas: 2", "replicas: 1")),
    );
    assert!(out.status.success(), "{}", text(&out));
    let status = status_until(&lab, "details back to one pod, cache to cache-0", |s| {
        pods_named(s, "details-v1-").len() == 1 && pods_named(s, "cache-") == ["default/cache-0"]
    });
    assert_eq!(
        pods_named(&status, "reviews-v1-"),
        new,
        "an unchanged template keeps its pod"
    );

    // Deleting a Deployment removes its pods (and their namespaces).
    let out = lab.config("delete", "curl.yaml", None);
    assert!(out.status.success(), "{}", text(&out));
    let status = status_until(&lab, "curl's pod gone with its Deployment", |s| {
        pods_named(s, "curl-").is_empty()
    });
    assert!(!status.contains("Deployment default/curl"), "{status}");
}
