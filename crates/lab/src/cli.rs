//! Client side of the operator commands: `bowline apply/delete -f` (to the control
//! plane's apply API) and `bowline ztunnel-config` (ztunnel's admin `/config_dump`).

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// One HTTP/1.1 request; returns the status and body.
pub async fn http(method: &str, url: &str, body: Option<String>) -> Result<(u16, String), String> {
    http_in(None, method, url, body).await
}

/// One HTTP/1.1 request from inside network namespace `ns` (a lab's), or from here.
pub async fn http_in(
    ns: Option<&netns::Namespace>,
    method: &str,
    url: &str,
    body: Option<String>,
) -> Result<(u16, String), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} has no host:port"))?
        .to_string();
    let tcp = match ns {
        None => tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| format!("cannot reach {authority}: {e}"))?,
        Some(ns) => {
            let target = authority.clone();
            let std_tcp = ns
                .run(move || {
                    let addr: std::net::SocketAddr = target
                        .parse()
                        .map_err(|e| std::io::Error::other(format!("{target}: {e}")))?;
                    let tcp = std::net::TcpStream::connect_timeout(
                        &addr,
                        std::time::Duration::from_secs(5),
                    )?;
                    tcp.set_nonblocking(true)?;
                    Ok::<_, std::io::Error>(tcp)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot reach {authority} in {}: {e}", ns.name()))?;
            tokio::net::TcpStream::from_std(std_tcp).map_err(|e| e.to_string())?
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, &authority)
        .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{authority}: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The YAML documents of `paths` (files, or directories of `.yaml`/`.yml`/`.json`).
pub fn read_documents(paths: &[PathBuf]) -> Result<String, String> {
    fn walk(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for entry in entries {
                if entry.is_dir()
                    || entry
                        .extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                {
                    walk(&entry, out)?;
                }
            }
            Ok(())
        } else {
            out.push(path.to_owned());
            Ok(())
        }
    }
    let mut files = Vec::new();
    for path in paths {
        walk(path, &mut files)?;
    }
    let mut text = String::new();
    for file in files {
        let content =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        text.push_str("---\n");
        text.push_str(&content);
        text.push('\n');
    }
    Ok(text)
}

/// `bowline apply -f` / `delete -f`: sends the documents; returns one line per object.
pub async fn apply(
    ns: Option<&netns::Namespace>,
    control_plane: &str,
    paths: &[PathBuf],
    delete: bool,
    dry_run: bool,
) -> Result<String, String> {
    let body = read_documents(paths)?;
    let url = format!(
        "{}/api/{}{}",
        control_plane.trim_end_matches('/'),
        if delete { "delete" } else { "apply" },
        if dry_run { "?dryRun=true" } else { "" }
    );
    let (status, text) = http_in(ns, "POST", &url, Some(body)).await?;
    let answer: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| format!("unexpected answer ({status}) from {url}: {text}"))?;
    if status != 200 {
        return Err(answer["error"].as_str().map_or_else(
            || text.clone(),
            |e| format!("refused, nothing changed: {e}"),
        ));
    }
    let suffix = if dry_run { " (dry run)" } else { "" };
    let mut out = String::new();
    for change in answer["changes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{} {}{suffix}\n",
            change["object"].as_str().unwrap_or("?"),
            change["outcome"].as_str().unwrap_or("?")
        ));
    }
    if let Some(status) = answer["status"].as_object() {
        for (object, messages) in status {
            for message in messages.as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "note: {object}: {}\n",
                    message.as_str().unwrap_or_default()
                ));
            }
        }
    }
    Ok(out)
}

/// `bowline ztunnel-config workloads|services|policies|certificates|all`.
pub async fn ztunnel_config(
    ns: Option<&netns::Namespace>,
    admin: &str,
    what: &str,
    yaml: bool,
) -> Result<String, String> {
    let url = format!("{}/config_dump", admin.trim_end_matches('/'));
    let (status, text) = http_in(ns, "GET", &url, None).await?;
    if status != 200 {
        return Err(format!("{url} answered {status}: {text}"));
    }
    let dump: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON: {e}"))?;
    let section = match what {
        "all" => dump,
        "workloads" | "services" | "policies" | "certificates" => dump[what].clone(),
        other => {
            return Err(format!(
                "{other:?}: choose workloads, services, policies, certificates or all"
            ));
        }
    };
    if yaml {
        serde_norway::to_string(&section).map_err(|e| e.to_string())
    } else {
        serde_json::to_string_pretty(&section)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string())
    }
}
