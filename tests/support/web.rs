//! Web test kit, no brokers needed: a throw-away PKI written to a temp directory (rcgen, ring),
//! exporter-toolkit web configuration files (`--web.config.file`), a daemon config whose only
//! broker port is closed (its cells go `connect_failed`, the HTTP server runs all the same),
//! and a small HTTPS client with optional basic auth and client certificate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A temp directory for one test's certificates, keys and configs; removed when dropped.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("crossprobe-web-{}", super::unique()));
        std::fs::create_dir_all(&dir).unwrap();
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A new CA, its certificate written to `NAME.crt`.
    pub fn ca(&self, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("crossprobe test {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let path = self.path(&format!("{name}.crt"));
        std::fs::write(&path, cert.pem()).unwrap();
        Ca { issuer: Issuer::new(params, key), path }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub path: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Identity {
    /// The web configuration file's `tls_server_config` serving this identity; `extra` lines
    /// (indented by two spaces) are added to the section.
    pub fn tls_server_config(&self, extra: &str) -> String {
        format!(
            "tls_server_config:\n  cert_file: \"{}\"\n  key_file: \"{}\"\n{extra}",
            self.cert.display(),
            self.key.display()
        )
    }
}

/// A web configuration file's `basic_auth_users` with one user.
pub fn basic_auth_users(user: &str, password: &str) -> String {
    format!("basic_auth_users:\n  {user}: \"{}\"\n", bcrypt_hash(password))
}

/// Writes `yaml` as the web configuration file `web.yml` of `pki`, replacing it at once (a
/// new file renamed over the old, as a Kubernetes Secret update or `mv` does), so the daemon
/// never reads half of it.
pub fn write_web_file(pki: &Pki, yaml: &str) -> PathBuf {
    let (path, next) = (pki.path("web.yml"), pki.path("web.yml.next"));
    std::fs::write(&next, yaml).unwrap();
    std::fs::rename(&next, &path).unwrap();
    path
}

/// Run options with `yaml` as the web configuration file.
pub fn with_web_file(pki: &Pki, yaml: &str) -> crossprobe::daemon::RunOptions {
    crossprobe::daemon::RunOptions { web_config_file: Some(write_web_file(pki, yaml)), ..Default::default() }
}

impl Ca {
    /// A server certificate for 127.0.0.1 and localhost, written to `NAME.crt` and `NAME.key`.
    pub fn server(&self, pki: &Pki, name: &str) -> Identity {
        self.issue(pki, name, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate, written to `NAME.crt` and `NAME.key`.
    pub fn client(&self, pki: &Pki, name: &str) -> Identity {
        self.issue(pki, name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, pki: &Pki, name: &str, usage: ExtendedKeyUsagePurpose) -> Identity {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let identity =
            Identity { cert: pki.path(&format!("{name}.crt")), key: pki.path(&format!("{name}.key")) };
        std::fs::write(&identity.cert, cert.pem()).unwrap();
        std::fs::write(&identity.key, key.serialize_pem()).unwrap();
        identity
    }
}

/// A bcrypt hash at the lowest cost, so tests stay fast.
pub fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

/// A daemon config on 127.0.0.1:0 with `web` as the body of `[daemon.web]`. Its one AMQP target
/// is a closed port, so no broker is needed.
pub fn web_config(pki: &Pki, web: &str) -> String {
    let password = pki.path("amqp-password");
    std::fs::write(&password, "unused\n").unwrap();
    format!(
        "[daemon]\nlisten = \"127.0.0.1:0\"\ninstance = \"web-{}\"\n\n[daemon.web]\n{web}\n\n\
         [[targets]]\nname = \"rabbit-a\"\nprotocol = \"amqp\"\naz = \"a\"\naddresses = [\"127.0.0.1:{}\"]\n\n\
         [[tenants]]\nname = \"acme\"\namqp = {{ vhost = \"acme\", user = \"acme\", password_file = \"{}\" }}\n",
        super::unique(),
        super::free_port(),
        password.display()
    )
}

/// What an HTTPS request got back.
pub struct Response {
    pub status: u16,
    /// Status line and headers.
    pub head: String,
    pub body: String,
}

impl std::fmt::Debug for Response {
    /// Head and the start of the body: enough to tell what came back, short enough to read.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = self.body.char_indices().nth(200).map_or(self.body.len(), |(i, _)| i);
        write!(f, "{:?} {:?}", self.head, &self.body[..end])
    }
}

impl Response {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// An HTTPS/1.1 client that trusts one CA, optionally with a client certificate.
pub struct Client {
    config: Arc<rustls::ClientConfig>,
}

impl Client {
    pub fn new(ca: &Path, identity: Option<&Identity>) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let config = match identity {
            Some(id) => {
                let certs = CertificateDer::pem_file_iter(&id.cert).unwrap().map(Result::unwrap).collect();
                builder.with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(&id.key).unwrap()).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        Client { config: Arc::new(config) }
    }

    /// A client that trusts `ca` and speaks only TLS 1.2 with the one cipher suite `suite`.
    pub fn tls12_only(ca: &Path, suite: rustls::CipherSuite) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites.retain(|s| s.suite() == suite);
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Client { config: Arc::new(config) }
    }

    /// A TLS connection to `addr`, its handshake done. An error says where it broke.
    pub async fn connect(
        &self,
        addr: SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::IpAddress(addr.ip().into());
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        connector.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))
    }

    /// `GET path`, with basic auth when `auth` is given. An error says where the exchange broke.
    pub async fn get(
        &self,
        addr: SocketAddr,
        path: &str,
        auth: Option<(&str, &str)>,
    ) -> Result<Response, String> {
        let exchange = async {
            let mut tls = self.connect(addr).await?;
            let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
            if let Some((user, password)) = auth {
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                request += &format!("Authorization: Basic {token}\r\n");
            }
            request += "\r\n";
            write_all(&mut tls, request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
            let raw = read_to_end(&mut tls).await.map_err(|e| format!("read: {e}"))?;
            let text = String::from_utf8_lossy(&raw).into_owned();
            let (head, body) =
                text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP response: {text:?}"))?;
            let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            Ok(Response { status, head: head.to_owned(), body: body.to_owned() })
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
            .await
            .map_err(|_| "timed out".to_owned())?
    }
}

// tokio's `io-util` extension traits are not among the crate's tokio features; these two are all
// the client needs.

pub async fn write_all(s: &mut (impl AsyncWrite + Unpin), mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_write(cx, buf)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_flush(cx)).await
}

pub async fn read_to_end(s: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut buf = ReadBuf::new(&mut chunk);
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_read(cx, &mut buf)).await?;
        if buf.filled().is_empty() {
            return Ok(out);
        }
        out.extend_from_slice(buf.filled());
    }
}
