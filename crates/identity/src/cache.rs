//! An on-disk cache of issued certificates, so a restarted process that acts for workloads
//! (ztunnel) can serve them before its certificate service answers again.
//!
//! One file per identity in a directory of mode 0700: the chain (leaf first, root last)
//! and the private key, PEM, mode 0600, replaced atomically (a temporary file created 0600,
//! renamed over the old one). A cached certificate is used only if it parses, names the
//! identity asked for, is within its validity and was issued under the trust root the
//! cache was opened with (a rotated root makes old entries useless); anything else is
//! removed. Owns the files and their checks; the [`crate::CertificateManager`] decides when
//! to read and write them. File I/O only, no sockets.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::cert::WorkloadCertificate;
use crate::spiffe::SpiffeId;

/// Why the cache could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file or the directory could not be created, read or written.
    #[error("certificate cache {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The trust root given is not a PEM certificate.
    #[error("certificate cache: the trust root is not a PEM certificate")]
    BadRoot,
}

/// A directory of cached certificates.
#[derive(Debug, Clone)]
pub struct CertificateCache {
    dir: PathBuf,
    root: CertificateDer<'static>,
}

impl CertificateCache {
    /// Opens (creating it with mode 0700 if needed) the cache in `dir`, accepting entries
    /// issued under the trust root `root_pem`.
    pub fn open(dir: &Path, root_pem: &str) -> Result<Self, CacheError> {
        let root =
            CertificateDer::from_pem_slice(root_pem.as_bytes()).map_err(|_| CacheError::BadRoot)?;
        let io = |source| CacheError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "the certificate cache directory is open to other users; its files are 0600, but make it 0700"
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            root,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `identity`: `<trust domain>~<namespace>~<service account>.pem` (none of
    /// the parts can hold `~`).
    pub fn path(&self, identity: &SpiffeId) -> PathBuf {
        self.dir.join(format!(
            "{}~{}~{}.pem",
            identity.trust_domain(),
            identity.namespace(),
            identity.service_account()
        ))
    }

    /// The cached certificate of `identity`, if there is one still usable at `now`; an
    /// unusable entry (damaged, expired, another identity or root) is removed and logged.
    pub fn load(&self, identity: &SpiffeId, now: SystemTime) -> Option<WorkloadCertificate> {
        let path = self.path(identity);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "cannot read the cached certificate; asking the certificate service");
                return None;
            }
        };
        match self.check(identity, &text, now) {
            Ok(cert) => Some(cert),
            Err(why) => {
                tracing::info!(file = %path.display(), %identity, why, "cached certificate not used; removing it");
                self.remove(identity);
                None
            }
        }
    }

    fn check(
        &self,
        identity: &SpiffeId,
        text: &str,
        now: SystemTime,
    ) -> Result<WorkloadCertificate, String> {
        // The chain's sections and the key's are told apart by their PEM labels.
        let cert = WorkloadCertificate::from_pem_chain(&[text.to_owned()], text)
            .map_err(|e| format!("damaged: {e}"))?;
        if cert.identity() != identity {
            return Err(format!("it names {}", cert.identity()));
        }
        if !cert.info().is_valid_at(now) {
            return Err("it is expired (or not yet valid)".into());
        }
        if cert.root_ders().first() != Some(&self.root) {
            return Err("it was issued under another trust root".into());
        }
        Ok(cert)
    }

    /// Stores the chain (PEM, leaf first, root last) and key issued for `identity`,
    /// replacing what was there.
    pub fn store(
        &self,
        identity: &SpiffeId,
        chain_pem: &[String],
        key_pem: &str,
    ) -> Result<(), CacheError> {
        let path = self.path(identity);
        let mut text = String::new();
        for pem in chain_pem.iter().map(String::as_str).chain([key_pem]) {
            text.push_str(pem);
            if !text.ends_with('\n') {
                text.push('\n');
            }
        }
        crate::private_file::write(&path, text.as_bytes())
            .map_err(|source| CacheError::Io { path, source })
    }

    /// Removes the entry of `identity`, if any.
    pub fn remove(&self, identity: &SpiffeId) {
        let path = self.path(identity);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "cannot remove a cached certificate")
            }
        }
    }
}

#[cfg(test)]
mod tests;
