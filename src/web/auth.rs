//! HTTP basic authentication in front of every endpoint, as exporter-toolkit does it: users
//! with bcrypt hashes from the web configuration file's `basic_auth_users` (as it is now: see
//! [`super::file`]); anything else gets `401` with `WWW-Authenticate: Basic realm="crossprobe"`.
//! The file's `http_server_config.headers` are added to every response, a 401 included.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10) and Prometheus scrapes often, so
//! a successful check is remembered, keyed by an HMAC-SHA-256 of user, password and hash under a
//! key drawn at start-up: the password itself is never stored. Failed checks are not
//! remembered; they run on the blocking pool, one at a time and in turns by client address
//! ([`super::attempts`]), so a flood of wrong passwords costs at most one core, never stalls
//! the runtime, and never makes another address's first login wait for it. A client with too
//! many checks in progress gets `429 Too Many Requests` without one. An unknown user is checked
//! against a dummy hash, so the answer time does not tell which users exist. Passwords and the
//! `Authorization` header are never logged.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ring::hmac;

use super::attempts::{Attempts, Client, Refused};
use super::connection::Peer;
use super::file::WebFile;
use crate::config::PasswordHash;

/// The realm clients are told to authenticate for.
pub const CHALLENGE: &str = "Basic realm=\"crossprobe\"";

/// Successful checks remembered at most; the memory is emptied when full.
const REMEMBERED: usize = 1024;

/// A bcrypt hash (cost 10) of a random string, checked for unknown users (exporter-toolkit's).
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// The checks that passed, and the queue of those in progress. A remembered check names the
/// hash it passed against, so a user whose hash changed in the file is checked again.
pub struct BasicAuth {
    key: hmac::Key,
    verified: Mutex<HashSet<[u8; 32]>>,
    attempts: Attempts,
}

impl Default for BasicAuth {
    /// Nothing remembered yet, under a key drawn now.
    fn default() -> BasicAuth {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .expect("the system random number generator works");
        BasicAuth { key, verified: Mutex::new(HashSet::new()), attempts: Attempts::default() }
    }
}

impl BasicAuth {
    /// Whether an `Authorization` header names one of `users` with the right password;
    /// refused without a check when `client` has too many in progress.
    pub async fn allows(
        &self,
        users: &BTreeMap<String, PasswordHash>,
        authorization: Option<&HeaderValue>,
        client: Client,
    ) -> Result<bool, Refused> {
        let Some((user, password)) = authorization.and_then(credentials) else { return Ok(false) };
        let hash = users.get(&user);
        let tag = hash.map(|h| self.tag(&user, &password, h));
        if tag.is_some_and(|t| self.remembers(&t)) {
            return Ok(true);
        }
        let _turn = self.attempts.turn(client).await?;
        // A request with the same credentials may have been checked while this one waited.
        if tag.is_some_and(|t| self.remembers(&t)) {
            return Ok(true);
        }
        let target = hash.map_or(DUMMY_HASH, PasswordHash::as_str).to_owned();
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &target).unwrap_or(false))
            .await
            .unwrap_or(false);
        match (matches, tag) {
            (true, Some(tag)) => {
                let mut verified = self.verified.lock().expect("auth cache lock");
                if verified.len() >= REMEMBERED {
                    verified.clear();
                }
                verified.insert(tag);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn tag(&self, user: &str, password: &str, hash: &PasswordHash) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        // Lengths first, so no two different triples feed the same bytes.
        for part in [user, password, hash.as_str()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn remembers(&self, tag: &[u8; 32]) -> bool {
        self.verified.lock().expect("auth cache lock").contains(tag)
    }
}

/// User and password of a `Basic` authorization (RFC 7617); the user ends at the first ':'.
fn credentials(value: &HeaderValue) -> Option<(String, String)> {
    let (scheme, encoded) = value.to_str().ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (user, password) =
        String::from_utf8(decoded).ok()?.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()))?;
    Some((user, password))
}

/// The web configuration file and the checks made against its users.
pub struct Guard {
    pub file: Arc<WebFile>,
    pub auth: BasicAuth,
}

/// Middleware: passes authenticated requests on (every request, when the file names no
/// users), answers the rest with 401, and 429 when the client has too many checks in progress;
/// adds the file's headers to whatever answers.
pub async fn require(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let served = guard.file.current();
    let client = request.extensions().get::<Peer>().map_or(Client::UNKNOWN, |p| Client::of(p.0.ip()));
    let allowed = if served.users.is_empty() {
        Ok(true)
    } else {
        guard.auth.allows(&served.users, request.headers().get(header::AUTHORIZATION), client).await
    };
    let mut response = match allowed {
        Ok(true) => next.run(request).await,
        Ok(false) => (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, CHALLENGE)], "Unauthorized\n")
            .into_response(),
        Err(refused) => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], format!("{refused}\n"))
            .into_response(),
    };
    for (name, value) in &served.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn users() -> BTreeMap<String, PasswordHash> {
        let hash = bcrypt::hash("s3cret:with colon", 4).unwrap();
        BTreeMap::from([("prometheus".to_owned(), PasswordHash::new(hash))])
    }

    #[test]
    fn credentials_are_parsed_as_rfc_7617_says() {
        let cases: [(&str, Option<(&str, &str)>); 6] = [
            ("Basic cHJvbTpwdw==", Some(("prom", "pw"))),
            ("basic   cHJvbTpwdw== ", Some(("prom", "pw"))),
            // Only the first ':' separates: passwords may contain colons.
            ("Basic YTpiOmM=", Some(("a", "b:c"))),
            ("Bearer cHJvbTpwdw==", None),
            ("Basic not-base64!", None),
            ("Basic bm9jb2xvbg==", None),
        ];
        for (value, expected) in cases {
            let got = credentials(&HeaderValue::from_static(value));
            let expected = expected.map(|(u, p)| (u.to_owned(), p.to_owned()));
            assert_eq!(got, expected, "header {value:?}");
        }
    }

    #[tokio::test]
    async fn only_the_right_user_and_password_pass_and_successes_are_remembered() {
        let (auth, users) = (BasicAuth::default(), users());
        let allows = |h: Option<HeaderValue>| {
            let (auth, users) = (&auth, &users);
            async move { auth.allows(users, h.as_ref(), Client::UNKNOWN).await.expect("never refused here") }
        };
        assert!(!allows(None).await, "no header");
        assert!(!allows(Some(header("prometheus", "wrong"))).await, "wrong password");
        assert!(!allows(Some(header("nobody", "s3cret:with colon"))).await, "unknown user");
        assert!(auth.verified.lock().unwrap().is_empty(), "failures must not be remembered");
        assert!(allows(Some(header("prometheus", "s3cret:with colon"))).await);
        assert_eq!(auth.verified.lock().unwrap().len(), 1, "a success is remembered");
        assert!(allows(Some(header("prometheus", "s3cret:with colon"))).await);
        assert!(!allows(Some(header("prometheus", "s3cret"))).await, "a prefix is not the password");
        let rotated =
            BTreeMap::from([("prometheus".to_owned(), PasswordHash::new(bcrypt::hash("new", 4).unwrap()))]);
        let old = header("prometheus", "s3cret:with colon");
        assert!(
            !auth.allows(&rotated, Some(&old), Client::UNKNOWN).await.unwrap(),
            "a remembered check is for the old hash only"
        );
        assert!(auth.allows(&rotated, Some(&header("prometheus", "new")), Client::UNKNOWN).await.unwrap());
    }

    #[test]
    fn remembered_tags_tell_users_passwords_and_hashes_apart() {
        let auth = BasicAuth::default();
        let hash = users()["prometheus"].clone();
        let tag = auth.tag("prometheus", "s3cret:with colon", &hash);
        assert_eq!(tag, auth.tag("prometheus", "s3cret:with colon", &hash));
        assert_ne!(tag, auth.tag("prometheus", "s3cret:with colon", &PasswordHash::new(DUMMY_HASH)));
        assert_ne!(tag, auth.tag("prometheus", "s3cret:with colo", &hash));
        assert_ne!(
            tag,
            auth.tag("prometheus:", "3cret:with colon", &hash),
            "user and password are kept apart"
        );
    }
}
