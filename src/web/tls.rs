//! HTTPS for the daemon's endpoints: reading the PEM files (shared with config validation, so
//! `check` and the server read them the same way), the rustls server configuration, and its
//! reload when the files change.
//!
//! Every new connection looks at the modification time and size of the certificate, key and
//! client CA files (one `stat` each); when any changed, the configuration is rebuilt from the
//! files. A rebuild that fails (say, a certificate rotated before its key) is logged once per
//! change and the previous configuration stays in use, so a rotation in progress never takes
//! the endpoint down. exporter-toolkit re-reads the files on every handshake; this has the same
//! effect without parsing them again when nothing changed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, RootCertStore, ServerConfig};
use tracing::{info, warn};

use crate::config::TlsFiles;

/// Why a TLS file cannot be used. Messages quote file names, never file contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read \"{}\": {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("\"{}\" holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("\"{}\" holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("\"{}\": {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("the private key in \"{}\" does not belong to the certificate in \"{}\"", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
}

impl TlsError {
    /// Whether the error is about the file `path` (a key mismatch is the key file's).
    pub fn blames(&self, path: &Path) -> bool {
        match self {
            TlsError::Read { path: p, .. }
            | TlsError::NoCertificate { path: p }
            | TlsError::NoKey { path: p }
            | TlsError::Invalid { path: p, .. } => p == path,
            TlsError::KeyMismatch { key, .. } => key == path,
        }
    }
}

/// The crypto provider, named explicitly: lapin turns on rustls's aws-lc-rs provider in the same
/// build, so rustls has no single process-wide default to fall back on.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn invalid(path: &Path, e: impl ToString) -> TlsError {
    TlsError::Invalid { path: path.to_owned(), reason: e.to_string() }
}

/// Every certificate in a PEM file, the end-entity certificate first.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey { path: path.to_owned() },
        e => pem_error(path, e),
    })
}

/// PEM errors without the bytes some of them carry (they could be key material).
fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    let reason = match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64",
        _ => "not a readable PEM file",
    };
    invalid(path, reason)
}

/// The CAs that sign client certificates.
pub fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| invalid(path, e))?;
    }
    Ok(roots)
}

/// Certificate chain and key, checked to belong together.
pub fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_file: &Path,
    key_file: &Path,
) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch { cert: cert_file.to_owned(), key: key_file.to_owned() }
        }
        rustls::Error::InvalidCertificate(_) => invalid(cert_file, e),
        e => invalid(key_file, e),
    })
}

/// The rustls configuration the files describe: HTTP/1.1, client certificates required and
/// verified when a client CA is given.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let certs = certificates(&files.cert_file)?;
    let key = private_key(&files.key_file)?;
    let certified = certified_key(certs, key, &files.cert_file, &files.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&files.cert_file, e))?;
    let builder = match &files.client_ca_file {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots(ca)?), provider)
                .build()
                .map_err(|e| invalid(ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Modification time and size of each file; `None` for a file that cannot be looked at.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(files: &TlsFiles) -> Stamp {
    [Some(&files.cert_file), Some(&files.key_file), files.client_ca_file.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

/// The server configuration for new connections, rebuilt when the files change.
pub struct Certificates {
    files: TlsFiles,
    current: Mutex<(Stamp, Arc<ServerConfig>)>,
}

impl Certificates {
    /// Reads the files; fails when they cannot serve.
    pub fn load(files: &TlsFiles) -> Result<Certificates, TlsError> {
        let stamp = stamp(files);
        let config = Arc::new(server_config(files)?);
        Ok(Certificates { files: files.clone(), current: Mutex::new((stamp, config)) })
    }

    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<ServerConfig> {
        let stamp = stamp(&self.files);
        let mut current = self.current.lock().expect("TLS configuration lock");
        if current.0 != stamp {
            // Remembered even when the rebuild fails, so one bad rotation is reported once.
            current.0 = stamp;
            match server_config(&self.files) {
                Ok(config) => {
                    current.1 = Arc::new(config);
                    info!(cert_file = %self.files.cert_file.display(), "TLS files changed, reloaded");
                }
                Err(e) => {
                    warn!(error = %e, "TLS files changed but cannot be used; serving with the previous ones")
                }
            }
        }
        current.1.clone()
    }
}
