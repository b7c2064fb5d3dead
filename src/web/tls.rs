//! HTTPS for the daemon's endpoints: the rustls server configuration built from the PEM files
//! (read by [`crate::pem`], as config validation reads them), and its reload when they change.
//!
//! Every new connection looks at the modification time and size of the certificate, key and
//! client CA files (one `stat` each); when any changed, the configuration is rebuilt from the
//! files. A rebuild that fails (say, a certificate rotated before its key) is logged once per
//! change and the previous configuration stays in use, so a rotation in progress never takes
//! the endpoint down. exporter-toolkit re-reads the files on every handshake; this has the same
//! effect without parsing them again when nothing changed.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::ServerConfig;
use tracing::{info, warn};

use crate::config::TlsFiles;
use crate::pem::{certificates, certified_key, client_roots, invalid, private_key, TlsError};

/// The rustls configuration the files describe: HTTP/1.1, client certificates required and
/// verified when a client CA is given.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = certificates(&files.cert_file)?;
    let key = private_key(&files.key_file)?;
    let certified = certified_key(certs, key, &files.cert_file, &files.key_file)?;
    let builder = ServerConfig::builder();
    let builder = match &files.client_ca_file {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder(Arc::new(client_roots(ca)?))
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
