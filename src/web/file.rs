//! The web configuration file (`--web.config.file`) as the server uses it: what it says, kept
//! current. Every new connection and every request looks at the modification time, size and
//! inode of the file and of the PEM files it names (one `stat` each); when any changed, the file
//! is read and checked again and the TLS configuration rebuilt, so rotating users or
//! certificates needs no restart (exporter-toolkit re-reads the file on every request and
//! handshake; this has the same effect without parsing unchanged files).
//!
//! A new file that cannot be used (a mistake, a certificate rotated before its key, a switch
//! between HTTP and HTTPS, which needs a restart) is logged once per change, counted through
//! [`WebFile::on_reload`], and the last good one stays in use, so a rotation in progress never
//! takes the endpoint down or opens it. It is tried again when the web configuration file, or a
//! file the last good version names, changes again (a version whose own new PEM files are not
//! ready yet is retried when the web configuration file is touched; rotations that replace the
//! files in place, as cert-manager and Secret updates do, need nothing).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use axum::http::{HeaderName, HeaderValue};
use rustls::ServerConfig;
use tracing::{info, warn};

use super::tls::server_config;
use crate::config::{ConfigError, PasswordHash, WebConfig};
use crate::pem::TlsError;

/// Why a web configuration file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot serve HTTPS: {0}")]
    Tls(#[from] TlsError),
    #[error("{}: switching between HTTP and HTTPS needs a restart; the server keeps {keeps}", .file.display())]
    Scheme { keeps: &'static str, file: PathBuf },
}

/// What one version of the file asks for.
pub struct Served {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// Empty: no authentication.
    pub users: BTreeMap<String, PasswordHash>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Modification time, size and inode of each file watched; `None` for one that cannot be
/// looked at.
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

struct State {
    /// The web configuration file, then the PEM files the served version names.
    watched: Vec<PathBuf>,
    stamp: Stamp,
    served: Arc<Served>,
}

/// The file and its last good version.
pub struct WebFile {
    path: PathBuf,
    https: bool,
    state: Mutex<State>,
    reloaded: OnceLock<Box<dyn Fn(bool) + Send + Sync>>,
}

impl WebFile {
    /// Reads the file and the files it names; fails when they cannot serve.
    pub fn load(path: &Path) -> Result<WebFile, WebError> {
        let (watched, stamp, served) = read(path)?;
        let https = served.tls.is_some();
        let state = Mutex::new(State { watched, stamp, served: Arc::new(served) });
        Ok(WebFile { path: path.to_owned(), https, state, reloaded: OnceLock::new() })
    }

    /// Whether the server speaks HTTPS; fixed for the life of the process.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Calls `f` with the result of each reload of a changed file (for the metrics).
    pub fn on_reload(&self, f: impl Fn(bool) + Send + Sync + 'static) {
        let _ = self.reloaded.set(Box::new(f));
    }

    /// What to serve now: the file's current version, or the last good one.
    pub fn current(&self) -> Arc<Served> {
        let mut state = self.state.lock().expect("web configuration lock");
        let now = stamp(&state.watched);
        if now == state.stamp {
            return state.served.clone();
        }
        // Remembered even when the reload fails, so one bad change is reported once.
        state.stamp = now;
        let result = read(&self.path).and_then(|next| match (self.https, next.2.tls.is_some()) {
            (true, false) => Err(WebError::Scheme { keeps: "HTTPS", file: self.path.clone() }),
            (false, true) => Err(WebError::Scheme { keeps: "HTTP", file: self.path.clone() }),
            _ => Ok(next),
        });
        let ok = match result {
            Ok((watched, stamp, served)) => {
                info!(file = %self.path.display(), users = served.users.len(), "web configuration file changed, reloaded");
                *state = State { watched, stamp, served: Arc::new(served) };
                true
            }
            Err(e) => {
                warn!(error = %e, "web configuration file changed but cannot be used; serving with the previous version");
                false
            }
        };
        if let Some(reloaded) = self.reloaded.get() {
            reloaded(ok);
        }
        state.served.clone()
    }
}

/// The stamp is taken before each file is read, so a change made while reading is seen next
/// time.
fn read(path: &Path) -> Result<(Vec<PathBuf>, Stamp, Served), WebError> {
    let mut stamp = stamp(&[path.to_owned()]);
    let config = WebConfig::load(path)?;
    let mut watched = vec![path.to_owned()];
    watched.extend(config.files().into_iter().map(Path::to_owned));
    stamp.extend(self::stamp(&watched[1..]));
    let tls = config.tls.as_ref().map(server_config).transpose()?.map(Arc::new);
    let headers = config
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some((HeaderName::from_bytes(name.as_bytes()).ok()?, HeaderValue::from_str(value).ok()?))
        })
        .collect();
    Ok((watched, stamp, Served { tls, users: config.basic_auth_users, headers }))
}

fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len(), m.ino()))))
        .collect()
}
