//! Client side of the operator commands: `bowline apply/delete -f` (to the control
//! plane's management API, with the operator token) and `bowline ztunnel-config`
//! (ztunnel's admin `/config_dump`).

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
    request(ns, method, url, body, None).await
}

/// One HTTP/1.1 request, with `Authorization: Bearer <token>` when a token is given.
pub async fn request(
    ns: Option<&netns::Namespace>,
    method: &str,
    url: &str,
    body: Option<String>,
    token: Option<&str>,
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
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, &authority);
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
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

/// The YAML documents of `paths`: files, or the `.yaml`/`.yml`/`.json` files directly in
/// a directory — not in its subdirectories, as `bowline up -f DIR` and `kubectl apply -f
/// DIR` read it (so `examples/demo/walkthrough/` is not applied with `examples/demo`).
pub fn read_documents(paths: &[PathBuf]) -> Result<String, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|entry| {
                    !entry.is_dir()
                        && entry
                            .extension()
                            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.to_owned());
        }
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

/// The operator token in `file` (what the control plane wrote to
/// `<state-dir>/operator-token`).
pub fn read_token(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        format!(
            "the operator token {}: {e} (it is `operator-token` in the control plane's --state-dir)",
            file.display()
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the operator token {} is empty", file.display()));
    }
    Ok(token.to_owned())
}

/// What `bowline apply/delete` prints: one line per object on stdout, each warning as a
/// `WARNING:` line on stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutput {
    /// One line per object, then the translation notes.
    pub stdout: String,
    /// `WARNING: …` lines.
    pub warnings: Vec<String>,
}

/// `bowline apply -f` / `delete -f`: sends the documents to the management API
/// `control_plane` with `token`.
pub async fn apply(
    ns: Option<&netns::Namespace>,
    control_plane: &str,
    token: &str,
    paths: &[PathBuf],
    delete: bool,
    dry_run: bool,
) -> Result<ApplyOutput, String> {
    let body = read_documents(paths)?;
    let url = format!(
        "{}/api/{}{}",
        control_plane.trim_end_matches('/'),
        if delete { "delete" } else { "apply" },
        if dry_run { "?dryRun=true" } else { "" }
    );
    let (status, text) = request(ns, "POST", &url, Some(body), Some(token)).await?;
    let answer: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| format!("unexpected answer ({status}) from {url}: {text}"))?;
    if status != 200 {
        return Err(answer["error"].as_str().map_or_else(
            || text.clone(),
            |e| format!("refused, nothing changed: {e}"),
        ));
    }
    let suffix = if dry_run { " (dry run)" } else { "" };
    let warnings = answer["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str())
        .map(|w| format!("WARNING: {w}{suffix}"))
        .collect();
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
    Ok(ApplyOutput {
        stdout: out,
        warnings,
    })
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
