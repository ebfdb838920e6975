//! The operator token: what the management API (`--api-addr`, `/api/*` and `/debug/*`)
//! asks of every request, as `Authorization: Bearer <token>`.
//!
//! Made at first start in `<state-dir>/operator-token` — 256 random bits as 64 hex
//! digits, mode 0600, written to a temporary file and renamed so a reader never sees half
//! of it — and reused afterwards. Whoever can read that file is an operator: `bowline
//! apply --name LAB` reads it from the lab's state, `--token-file` or
//! `BOWLINE_OPERATOR_TOKEN` give it elsewhere. Presented tokens are compared in constant
//! time.
//!
//! Owns: making, reading and checking the token. Must not: know HTTP routes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The file in the state directory.
pub const FILE: &str = "operator-token";

/// Hex digits of a token (256 bits).
const HEX_LEN: usize = 64;

/// Why the token could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum OperatorTokenError {
    /// Reading or writing the file.
    #[error("operator token {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds something else than a token this control plane writes.
    #[error(
        "operator token {path}: not 64 hex digits; remove it to have a new one made (operators then need the new one)"
    )]
    Malformed {
        /// The file.
        path: String,
    },
}

/// The token and where it is kept.
pub struct OperatorToken {
    token: String,
    path: PathBuf,
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorToken")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl OperatorToken {
    /// The token in `state_dir`, made on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, OperatorTokenError> {
        let path = state_dir.join(FILE);
        let io = |source| OperatorTokenError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let token = text.trim().to_owned();
                if token.len() != HEX_LEN || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(OperatorTokenError::Malformed {
                        path: path.display().to_string(),
                    });
                }
                let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "the operator token was readable by others; made it 0600");
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                }
                return Ok(Self { token, path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut secret = [0u8; HEX_LEN / 2];
        identity::tls::crypto_provider()
            .secure_random
            .fill(&mut secret)
            .map_err(|_| io(std::io::Error::other("no randomness available")))?;
        let token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::create_dir_all(state_dir).map_err(io)?;
        // No trailing newline: a client may send the file verbatim as a header value.
        identity::private_file::write(&path, token.as_bytes()).map_err(io)?;
        tracing::info!(file = %path.display(), "made the operator token for the management API");
        Ok(Self { token, path })
    }

    /// Where the token is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether an `Authorization` header value is `Bearer <this token>`. Takes as long
    /// whatever the presented token's content.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(presented) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let presented = presented.trim_ascii();
        let expected = self.token.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        let difference = presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_made_once_private_and_checked_exactly() {
        identity::tls::install_default_provider();
        let dir = tempfile::tempdir().unwrap();
        let first = OperatorToken::load_or_create(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(text.trim().len(), 64);
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("operator-token.tmp").exists());

        let again = OperatorToken::load_or_create(dir.path()).unwrap();
        let header = format!("Bearer {}", text.trim());
        assert!(first.accepts(Some(header.as_bytes())));
        assert!(again.accepts(Some(header.as_bytes())), "reused");
        assert!(!again.accepts(None));
        assert!(!again.accepts(Some(text.trim().as_bytes())), "no scheme");
        let mut wrong = header.clone().into_bytes();
        let last = wrong.len() - 1;
        wrong[last] = if wrong[last] == b'0' { b'1' } else { b'0' };
        assert!(!again.accepts(Some(&wrong)));
        assert!(!again.accepts(Some(&header.as_bytes()[..header.len() - 1])));

        std::fs::write(dir.path().join(FILE), "short\n").unwrap();
        assert!(matches!(
            OperatorToken::load_or_create(dir.path()),
            Err(OperatorTokenError::Malformed { .. })
        ));
    }
}
