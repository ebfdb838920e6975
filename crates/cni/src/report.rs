//! Telling the control plane which pods this node agent has captured
//! (`bowline.agent.v1.NodeAgentStatus/ReportCapture` on its TLS port, 15012): the control
//! plane advertises a pod as HBONE only once its agent reported it, so mesh clients reach
//! it in plaintext until its traffic really goes to ztunnel.
//!
//! A report is the whole set (idempotent). It is sent whenever the set changes and
//! whenever the agent's xDS stream to the control plane (re)opens (a restarted control
//! plane hears from every agent again), retried with backoff (100 ms doubling to 5 s)
//! until the control plane takes it. The node token is re-read from its file for every
//! report, so a rotated token is picked up (surrounding whitespace ignored). Must not: decide what is captured (that is
//! [`crate::agent`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use xds::agent::CaptureReport;
use xds::agent::node_agent_status_client::NodeAgentStatusClient;

/// First retry delay after a failed report.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one report may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom reports are sent.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// The node the agent serves.
    pub node_name: String,
    /// The control plane's TLS port (`https://HOST:15012`).
    pub url: String,
    /// The mesh root that signed the control plane's certificate.
    pub root_pem: Option<String>,
    /// The node token (`bowline control-plane token --node NODE`).
    pub token_file: PathBuf,
}

/// Why a report did not get through.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The token file.
    #[error("node token {path}: {source}")]
    Token {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The control plane could not be reached, or refused the report.
    #[error("the control plane {code:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message (a refusal says why).
        message: String,
    },
    /// No answer in time.
    #[error("the control plane did not answer within {0:?}")]
    Timeout(Duration),
}

/// A client of the report service.
#[derive(Debug, Clone)]
pub struct Reporter {
    config: ReportConfig,
    client: NodeAgentStatusClient<tonic::transport::Channel>,
}

impl Reporter {
    /// A reporter to `config.url`; fails on a malformed address or a TLS URL without a
    /// root.
    pub fn new(config: ReportConfig) -> Result<Self, xds::XdsError> {
        let channel = xds::transport::lazy_channel(&config.url, config.root_pem.as_deref())?;
        Ok(Self {
            config,
            client: NodeAgentStatusClient::new(channel),
        })
    }

    /// Sends one report: `captured` is every pod uid this agent has captured. Returns how
    /// many the control plane recorded.
    pub async fn report(&self, captured: &BTreeSet<String>) -> Result<u32, ReportError> {
        let token = std::fs::read_to_string(&self.config.token_file).map_err(|source| {
            ReportError::Token {
                path: self.config.token_file.display().to_string(),
                source,
            }
        })?;
        let mut request = tonic::Request::new(CaptureReport {
            node: self.config.node_name.clone(),
            captured: captured.iter().cloned().collect(),
        });
        // Surrounding whitespace (a trailing newline from an editor or `echo`) is not part
        // of the token.
        let token = token.trim();
        let token_error = |problem: &str| ReportError::Token {
            path: self.config.token_file.display().to_string(),
            source: std::io::Error::other(format!(
                "{problem}; write the token from `bowline control-plane token --node NODE` into it"
            )),
        };
        if token.is_empty() {
            return Err(token_error("the file is empty"));
        }
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| token_error("the token is not valid header text"))?;
        request.metadata_mut().insert("authorization", bearer);
        let mut client = self.client.clone();
        let answer = tokio::time::timeout(TIMEOUT, client.report_capture(request))
            .await
            .map_err(|_| ReportError::Timeout(TIMEOUT))?
            .map_err(|status| ReportError::Rpc {
                code: status.code(),
                message: status.message().to_owned(),
            })?
            .into_inner();
        if !answer.unknown.is_empty() {
            tracing::debug!(unknown = ?answer.unknown, "the control plane knows no such pods (deleted meanwhile)");
        }
        Ok(answer.recorded)
    }
}

/// Reports every set `captured` publishes (`None`: not known yet, nothing is sent), again
/// whenever `sessions` says the xDS stream (re)opened, retrying failures with backoff.
/// Returns when the agent drops its senders.
pub async fn run(
    reporter: Reporter,
    mut captured: watch::Receiver<Option<BTreeSet<String>>>,
    mut sessions: watch::Receiver<u64>,
) {
    let mut accepted: Option<BTreeSet<String>> = None;
    let mut backoff = MIN_BACKOFF;
    let mut last_error = String::new();
    loop {
        sessions.borrow_and_update();
        let current = captured.borrow_and_update().clone();
        if let Some(set) = current
            && accepted.as_ref() != Some(&set)
        {
            match reporter.report(&set).await {
                Ok(recorded) => {
                    tracing::info!(
                        captured = set.len(),
                        recorded,
                        "reported the captured pods to the control plane"
                    );
                    accepted = Some(set);
                    backoff = MIN_BACKOFF;
                    last_error.clear();
                }
                Err(error) => {
                    let text = error.to_string();
                    if text != last_error {
                        tracing::warn!(%error, retry_in = ?backoff, "cannot report the captured pods; until the control plane hears it, they stay plaintext to mesh clients");
                        last_error = text;
                    } else {
                        tracing::debug!(%error, "capture report failed again");
                    }
                    tokio::time::sleep(backoff + jitter(backoff)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        tokio::select! {
            changed = captured.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            changed = sessions.changed() => {
                if changed.is_err() {
                    return;
                }
                // A (re)connected control plane may have lost or missed the last report.
                accepted = None;
            }
        }
    }
}

/// Up to a tenth of `backoff`, so agents that failed together do not retry together.
fn jitter(backoff: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tenth = u32::try_from(backoff.as_millis() / 10)
        .unwrap_or(u32::MAX)
        .max(1);
    Duration::from_millis(u64::from(nanos % tenth))
}
