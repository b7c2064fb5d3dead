//! PEM files for TLS: certificates, private keys and client CAs, read the same way by config
//! validation (`check`) and by the HTTPS server. A leaf: it knows files and rustls, not the
//! configuration, so `config` and `web` can both use it.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore, ServerConfig};

/// Why a TLS file cannot be used. Messages quote file names, never file contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read \"{}\": {source}", path.display())]
    Read { path: PathBuf, source: crate::files::FileError },
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

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::files::read(path, crate::files::MAX_PEM_BYTES)
        .map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

/// A file that was read but cannot be used, with the reason.
pub fn invalid(path: &Path, e: impl ToString) -> TlsError {
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

/// Certificate chain and key, checked to belong together with rustls's process default provider:
/// ring, the one provider the build compiles in (see Cargo.toml), so rustls picks it by itself.
pub fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_file: &Path,
    key_file: &Path,
) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(certs, key, ServerConfig::builder().crypto_provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch { cert: cert_file.to_owned(), key: key_file.to_owned() }
        }
        rustls::Error::InvalidCertificate(_) => invalid(cert_file, e),
        e => invalid(key_file, e),
    })
}
