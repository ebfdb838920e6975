//! Node tokens: how a ztunnel proves which node it runs on when it asks for certificates.
//! A token is a JWT (HS256) whose subject is the node name, audience `bowline`, signed with
//! a key kept in the control plane's state directory (`node-token-key`, mode 0600).
//! `bowline control-plane token --node NAME` prints one; the lab hands each node its own.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

/// Audience of node tokens.
const AUDIENCE: &str = "bowline";
/// File of the signing key in the state directory.
pub const KEY_FILE: &str = "node-token-key";

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The key file could not be read or written.
    #[error("node token key {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Malformed, expired, wrong audience or signature.
    #[error(
        "invalid node token ({0}); issue a new one with `bowline control-plane token --node NAME`"
    )]
    Invalid(String),
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Claims {
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// Issues and checks node tokens.
pub struct NodeTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for NodeTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTokens")
    }
}

impl NodeTokens {
    /// Tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// The key in `dir`, created (32 random bytes, mode 0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, TokenError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(KEY_FILE);
        let io = |source| TokenError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(&path) {
            Ok(secret) if secret.len() >= 32 => return Ok(Self::new(&secret)),
            Ok(_) => {
                return Err(io(std::io::Error::other(
                    "shorter than 32 bytes; remove it to have a new key made",
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut secret = [0u8; 32];
        identity::tls::crypto_provider()
            .secure_random
            .fill(&mut secret)
            .map_err(|_| io(std::io::Error::other("no randomness available")))?;
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        std::io::Write::write_all(&mut file, &secret).map_err(io)?;
        Ok(Self::new(&secret))
    }

    /// A token for `node`, valid for `ttl`.
    pub fn issue(&self, node: &str, ttl: Duration) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: node.to_owned(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// The node named by the bearer token of a gRPC call (`authorization: Bearer …`),
    /// or the `unauthenticated` status to answer with.
    pub fn node_of<T>(&self, request: &tonic::Request<T>) -> Result<String, tonic::Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                tonic::Status::unauthenticated(
                    "no bearer token: send `authorization: Bearer <node token>` (bowline control-plane token --node NAME)",
                )
            })?;
        self.verify(token.trim())
            .map_err(|e| tonic::Status::unauthenticated(e.to_string()))
    }

    /// The node a valid token names.
    pub fn verify(&self, token: &str) -> Result<String, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        if data.claims.sub.is_empty() {
            return Err(TokenError::Invalid("no node named".into()));
        }
        Ok(data.claims.sub)
    }
}
