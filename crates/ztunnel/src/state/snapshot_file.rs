//! The xDS snapshot file (`bowline ztunnel --snapshot-file PATH`): the resources ztunnel
//! accepted from the control plane, kept on local disk so that a ztunnel restarted while
//! the control plane is away serves its node's pods at once instead of having nothing.
//!
//! The file holds the resources exactly as the control plane sent them — name, version
//! and the protobuf body — one `DeltaDiscoveryResponse` per type, so loading it goes
//! through the same validation and conversion as an xDS answer
//! ([`super::xds_client`]). Layout: a header line, the length-delimited responses, and a
//! 64-bit FNV-1a checksum of them (a truncated or damaged file is refused, never half
//! used). Writes are atomic (a temporary file created with mode 0600, synced, renamed over
//! the old one) and happen off the async runtime; when updates come faster than the disk,
//! only the latest is written. Owns the file format and its I/O; must not decide what the
//! resources mean.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use xds::discovery::{DeltaDiscoveryResponse, Resource};

/// The first bytes of every snapshot file.
const HEADER: &[u8] = b"bowline ztunnel xds snapshot v1\n";
/// Length of the trailing checksum.
const CHECKSUM_LEN: usize = 8;

/// Why the snapshot file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// Reading or writing failed.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not one ztunnel wrote.
    #[error(
        "snapshot file {path} is not a ztunnel xDS snapshot (unknown header); remove it or give another --snapshot-file"
    )]
    NotASnapshot {
        /// The file.
        path: PathBuf,
    },
    /// The file is truncated or damaged.
    #[error("snapshot file {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The resources decode but this ztunnel refuses them (validation, conflicts).
    #[error("snapshot file {path} holds resources this ztunnel refuses: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// The validation errors.
        reason: String,
    },
}

/// What is written: per type URL, the resources as the control plane sent them.
pub type Contents = Vec<(String, Vec<Arc<Resource>>)>;

/// The bytes of a snapshot file holding `contents`.
pub fn encode(contents: &Contents) -> Vec<u8> {
    let mut body = Vec::new();
    for (type_url, resources) in contents {
        let response = DeltaDiscoveryResponse {
            type_url: type_url.clone(),
            resources: resources.iter().map(|r| Resource::clone(r)).collect(),
            ..Default::default()
        };
        // Encoding into a Vec cannot run out of room.
        let _ = response.encode_length_delimited(&mut body);
    }
    let mut out = Vec::with_capacity(HEADER.len() + body.len() + CHECKSUM_LEN);
    out.extend_from_slice(HEADER);
    out.extend_from_slice(&body);
    out.extend_from_slice(&fnv1a(&body).to_le_bytes());
    out
}

/// The responses held in the bytes of snapshot file `path`.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Vec<DeltaDiscoveryResponse>, SnapshotFileError> {
    let damaged = |reason: String| SnapshotFileError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    let Some(rest) = bytes.strip_prefix(HEADER) else {
        return Err(SnapshotFileError::NotASnapshot {
            path: path.to_path_buf(),
        });
    };
    let Some(split) = rest.len().checked_sub(CHECKSUM_LEN) else {
        return Err(damaged("truncated: no checksum".into()));
    };
    let (mut body, checksum) = rest.split_at(split);
    let mut expected = [0u8; CHECKSUM_LEN];
    expected.copy_from_slice(checksum);
    if fnv1a(body) != u64::from_le_bytes(expected) {
        return Err(damaged(
            "the checksum does not match (truncated or altered)".into(),
        ));
    }
    let mut responses = Vec::new();
    while !body.is_empty() {
        let response = DeltaDiscoveryResponse::decode_length_delimited(&mut body)
            .map_err(|e| damaged(format!("response {}: {e}", responses.len() + 1)))?;
        responses.push(response);
    }
    Ok(responses)
}

/// Reads and decodes `path`; `None` when there is no such file.
pub async fn read(path: &Path) -> Result<Option<Vec<DeltaDiscoveryResponse>>, SnapshotFileError> {
    match tokio::fs::read(path).await {
        Ok(bytes) => decode(path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SnapshotFileError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces `path` with `bytes` atomically: a temporary file beside it, created with mode
/// 0600, synced, then renamed over it. Blocking.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), SnapshotFileError> {
    identity::private_file::write(path, bytes).map_err(|source| SnapshotFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes every new value of `latest` to `path` until the sender is gone; when several
/// arrive while one is being written, only the newest is written next. A failure is
/// logged once (and its recovery), the next update tries again.
pub async fn write_latest(
    path: PathBuf,
    mut latest: tokio::sync::watch::Receiver<Option<Arc<Contents>>>,
) {
    let mut failing = false;
    while latest.changed().await.is_ok() {
        let Some(contents) = latest.borrow_and_update().clone() else {
            continue;
        };
        let target = path.clone();
        let result = tokio::task::spawn_blocking(move || write(&target, &encode(&contents)))
            .await
            .unwrap_or_else(|e| {
                Err(SnapshotFileError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        match result {
            Ok(()) => {
                if failing {
                    tracing::info!(file = %path.display(), "xds: the snapshot file is written again");
                }
                failing = false;
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "xds: cannot write the snapshot file; a restart while the control plane is away would start without configuration");
                }
                failing = true;
            }
        }
    }
}

/// 64-bit FNV-1a: detects truncation and damage; not a defence against tampering (the
/// file is 0600 and whoever can write it can also write the configuration).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn contents() -> Contents {
        let resource = |name: &str| {
            Arc::new(Resource {
                name: name.into(),
                version: format!("v-{name}"),
                resource: Some(xds::google::protobuf::Any {
                    type_url: xds::ADDRESS_TYPE_URL.into(),
                    value: vec![1, 2, 3],
                }),
                ..Default::default()
            })
        };
        vec![
            (
                xds::ADDRESS_TYPE_URL.into(),
                vec![resource("a"), resource("b")],
            ),
            (xds::AUTHORIZATION_TYPE_URL.into(), vec![]),
        ]
    }

    #[test]
    fn a_written_snapshot_reads_back_with_names_versions_and_bodies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.snapshot");
        write(&path, &encode(&contents())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = decode(&path, &std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].type_url, xds::ADDRESS_TYPE_URL);
        assert_eq!(back[0].resources[1].name, "b");
        assert_eq!(back[0].resources[1].version, "v-b");
        assert_eq!(
            back[0].resources[1].resource.as_ref().unwrap().value,
            [1, 2, 3]
        );
        assert!(back[1].resources.is_empty());
        // Written again over itself: still 0600, no temporary file left.
        write(&path, &encode(&contents())).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn truncated_altered_or_foreign_files_are_refused() {
        let path = Path::new("x.snapshot");
        let bytes = encode(&contents());
        for cut in [
            bytes.len() - 1,
            bytes.len() - 9,
            HEADER.len() + 3,
            HEADER.len(),
        ] {
            let err = decode(path, &bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, SnapshotFileError::Damaged { .. }),
                "cut at {cut}: {err}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[HEADER.len() + 5] ^= 0x40;
        let err = decode(path, &flipped).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let err = decode(path, b"workloads: []\n").unwrap_err();
        assert!(
            matches!(err, SnapshotFileError::NotASnapshot { .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_missing_file_is_no_snapshot_and_an_unreadable_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("none")).await.unwrap().is_none());
        let err = read(dir.path()).await.unwrap_err();
        assert!(matches!(err, SnapshotFileError::Io { .. }), "{err}");
    }
}
