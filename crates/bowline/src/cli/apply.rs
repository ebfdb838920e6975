//! `bowline apply -f` / `bowline delete -f`: YAML to the control plane's management API,
//! with the operator token, and its answer printed one line per object.
//!
//! Owns: these commands' flags, reading the YAML files (`-` is stdin), choosing the
//! control plane and token (given, or the lab's), rendering the answer, and `--wait`:
//! polling the control plane's `/debug/connections` until every connected proxy
//! acknowledged the version the change made. Must not: interpret the YAML — the control
//! plane validates and translates it.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    /// Files or directories of YAML (`-`: standard input).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Validate and show what would change, without changing anything.
    #[arg(long)]
    dry_run: bool,
    /// Return once every proxy connected to the control plane (ztunnels, waypoints,
    /// node agents) acknowledged the configuration this change made, naming any that
    /// did not within --timeout.
    #[arg(long, conflicts_with = "dry_run")]
    wait: bool,
    /// Seconds --wait waits.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// The control plane's management API (without a lab), e.g. `http://127.0.0.1:15015`.
    #[arg(long, env = "BOWLINE_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// With --control-plane: the file holding the operator token (the control plane's
    /// `<state-dir>/operator-token`).
    #[arg(long, group = "credential")]
    token_file: Option<PathBuf>,
    /// With --control-plane: the operator token itself (better from the environment than
    /// on the command line, where other users can see it).
    #[arg(
        long,
        env = "BOWLINE_OPERATOR_TOKEN",
        hide_env_values = true,
        group = "credential"
    )]
    token: Option<String>,
    /// The lab whose control plane to use (default: the only running lab); its token is
    /// found in the lab's state.
    #[arg(long)]
    name: Option<String>,
}

/// `bowline apply/delete`: to `--control-plane`, or to a lab's control plane.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: ApplyArgs, delete: bool) -> anyhow::Result<()> {
    let (ns, url, token) = match args.control_plane {
        Some(url) => {
            let token = match (args.token, args.token_file) {
                (Some(token), _) => token,
                (None, Some(file)) => lab::client::read_token(&file).map_err(anyhow::Error::msg)?,
                (None, None) => anyhow::bail!(
                    "--control-plane needs the operator token: --token-file FILE (the control plane's <state-dir>/operator-token) or BOWLINE_OPERATOR_TOKEN"
                ),
            };
            (None, url, token)
        }
        None => {
            let lab = lab::up::pick(args.name)?;
            let token = lab::client::read_token(&lab::up::operator_token_file(&lab))
                .map_err(anyhow::Error::msg)?;
            (
                Some(lab::up::router(&lab)?),
                format!("http://{}", lab::up::CONTROL_PLANE_API),
                token,
            )
        }
    };
    let out = apply(ns.as_ref(), &url, &token, &args.files, delete, args.dry_run)
        .await
        .map_err(anyhow::Error::msg)?;
    print!("{}", out.stdout);
    for warning in &out.warnings {
        eprintln!("{warning}");
    }
    if args.wait
        && let Some(version) = out.version
    {
        let limit = std::time::Duration::try_from_secs_f64(args.timeout)
            .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
        let proxies = wait_for_acks(ns.as_ref(), &url, &token, version, limit)
            .await
            .map_err(anyhow::Error::msg)?;
        println!("version {version} acknowledged by every connected proxy ({proxies})");
    }
    Ok(())
}

/// Polls `/debug/connections` until every connected proxy holds `version` or later;
/// returns how many there are, or names those that did not within `limit`.
async fn wait_for_acks(
    ns: Option<&netns::Namespace>,
    control_plane: &str,
    token: &str,
    version: u64,
    limit: std::time::Duration,
) -> Result<usize, String> {
    let url = format!("{}/debug/connections", control_plane.trim_end_matches('/'));
    let deadline = std::time::Instant::now() + limit;
    loop {
        let (status, text) = lab::client::request(ns, "GET", &url, None, Some(token)).await?;
        if status != 200 {
            return Err(format!("{url}: {status} {text}"));
        }
        let answer: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{url}: {e}: {text}"))?;
        let connections = answer["connections"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let behind: Vec<String> = connections
            .iter()
            .filter(|c| c["syncedVersion"].as_u64().is_none_or(|v| v < version))
            .map(|c| {
                let at = c["syncedVersion"]
                    .as_u64()
                    .map_or_else(|| "nothing yet".to_owned(), |v| format!("version {v}"));
                let nack = c["lastNack"]
                    .as_str()
                    .map(|m| format!(", last NACK: {m}"))
                    .unwrap_or_default();
                format!(
                    "{} ({}) holds {at}{nack}",
                    c["node"].as_str().unwrap_or("?"),
                    c["id"].as_str().unwrap_or("?")
                )
            })
            .collect();
        if behind.is_empty() {
            return Ok(connections.len());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "applied, but not every proxy acknowledged version {version} within {:.1} s: {}",
                limit.as_secs_f64(),
                behind.join("; ")
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The YAML documents of `paths`: files, or the `.yaml`/`.yml`/`.json` files directly in
/// a directory — not in its subdirectories, as `bowline up -f DIR` and `kubectl apply -f
/// DIR` read it (so `examples/demo/walkthrough/` is not applied with `examples/demo`).
fn read_documents(paths: &[PathBuf]) -> Result<String, String> {
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
        let content = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(|e| format!("stdin: {e}"))?
        } else {
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?
        };
        text.push_str("---\n");
        text.push_str(&content);
        text.push('\n');
    }
    Ok(text)
}

/// What `bowline apply/delete` prints: one line per object on stdout, each warning as a
/// `WARNING:` line on stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ApplyOutput {
    /// One line per object, then the translation notes.
    stdout: String,
    /// `WARNING: …` lines.
    warnings: Vec<String>,
    /// The control plane's version after the change (not for a dry run).
    version: Option<u64>,
}

/// `bowline apply -f` / `delete -f`: sends the documents to the management API
/// `control_plane` with `token`.
async fn apply(
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
    let (status, text) = lab::client::request(ns, "POST", &url, Some(body), Some(token)).await?;
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
        version: answer["version"].as_u64().filter(|_| !dry_run),
    })
}
