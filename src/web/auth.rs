//! HTTP basic authentication in front of every endpoint, as exporter-toolkit does it: users
//! with bcrypt hashes from `[daemon.web] basic_auth_users`; anything else gets `401` with
//! `WWW-Authenticate: Basic realm="crossprobe"`.
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
use crate::config::PasswordHash;

/// The realm clients are told to authenticate for.
pub const CHALLENGE: &str = "Basic realm=\"crossprobe\"";

/// Successful checks remembered at most; the memory is emptied when full.
const REMEMBERED: usize = 1024;

/// A bcrypt hash (cost 10) of a random string, checked for unknown users (exporter-toolkit's).
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

/// The configured users and the checks that passed.
pub struct BasicAuth {
    users: BTreeMap<String, PasswordHash>,
    key: hmac::Key,
    verified: Mutex<HashSet<[u8; 32]>>,
    attempts: Attempts,
}

impl BasicAuth {
    /// `None` when no users are configured: no authentication.
    pub fn new(users: &BTreeMap<String, PasswordHash>) -> Option<BasicAuth> {
        if users.is_empty() {
            return None;
        }
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .expect("the system random number generator works");
        Some(BasicAuth {
            users: users.clone(),
            key,
            verified: Mutex::new(HashSet::new()),
            attempts: Attempts::default(),
        })
    }

    /// Whether an `Authorization` header names a configured user with the right password;
    /// refused without a check when `client` has too many in progress.
    pub async fn allows(&self, authorization: Option<&HeaderValue>, client: Client) -> Result<bool, Refused> {
        let Some((user, password)) = authorization.and_then(credentials) else { return Ok(false) };
        let hash = self.users.get(&user);
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

/// Middleware: passes authenticated requests on, answers the rest with 401, and 429 when the
/// client has too many checks in progress.
pub async fn require(State(auth): State<Arc<BasicAuth>>, request: Request, next: Next) -> Response {
    let client = request.extensions().get::<Peer>().map_or(Client::UNKNOWN, |p| Client::of(p.0.ip()));
    match auth.allows(request.headers().get(header::AUTHORIZATION), client).await {
        Ok(true) => next.run(request).await,
        Ok(false) => (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, CHALLENGE)], "Unauthorized\n")
            .into_response(),
        Err(refused) => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")], format!("{refused}\n"))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn auth() -> BasicAuth {
        let hash = bcrypt::hash("s3cret:with colon", 4).unwrap();
        let users = BTreeMap::from([("prometheus".to_owned(), PasswordHash::new(hash))]);
        BasicAuth::new(&users).unwrap()
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
        let auth = auth();
        let allows = |h: Option<HeaderValue>| {
            let auth = &auth;
            async move { auth.allows(h.as_ref(), Client::UNKNOWN).await.expect("never refused here") }
        };
        assert!(!allows(None).await, "no header");
        assert!(!allows(Some(header("prometheus", "wrong"))).await, "wrong password");
        assert!(!allows(Some(header("nobody", "s3cret:with colon"))).await, "unknown user");
        assert!(auth.verified.lock().unwrap().is_empty(), "failures must not be remembered");
        assert!(allows(Some(header("prometheus", "s3cret:with colon"))).await);
        assert_eq!(auth.verified.lock().unwrap().len(), 1, "a success is remembered");
        assert!(allows(Some(header("prometheus", "s3cret:with colon"))).await);
        assert!(!allows(Some(header("prometheus", "s3cret"))).await, "a prefix is not the password");
    }

    #[test]
    fn remembered_tags_tell_users_passwords_and_hashes_apart() {
        let auth = auth();
        let hash = auth.users["prometheus"].clone();
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
