//! HTTP basic authentication in front of every endpoint, as exporter-toolkit does it: users
//! with bcrypt hashes from `[daemon.web] basic_auth_users`; anything else gets `401` with
//! `WWW-Authenticate: Basic realm="crossprobe"`.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10) and Prometheus scrapes often, so
//! a successful check is remembered, keyed by an HMAC-SHA-256 of user, password and hash under a
//! key drawn at start-up: the password itself is never stored. Failed checks are not
//! remembered; they run one at a time on the blocking pool, so a flood of wrong passwords costs
//! at most one core and never stalls the runtime. An unknown user is checked against a dummy
//! hash, so the answer time does not tell which users exist. Passwords and the `Authorization`
//! header are never logged.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ring::hmac;

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
    one_bcrypt_at_a_time: tokio::sync::Mutex<()>,
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
            one_bcrypt_at_a_time: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether an `Authorization` header names a configured user with the right password.
    pub async fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else { return false };
        let hash = self.users.get(&user);
        let tag = hash.map(|h| self.tag(&user, &password, h));
        if tag.is_some_and(|t| self.remembers(&t)) {
            return true;
        }
        let _turn = self.one_bcrypt_at_a_time.lock().await;
        // A request with the same credentials may have been checked while this one waited.
        if tag.is_some_and(|t| self.remembers(&t)) {
            return true;
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
                true
            }
            _ => false,
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

/// Middleware: passes authenticated requests on, answers the rest with 401.
pub async fn require(State(auth): State<Arc<BasicAuth>>, request: Request, next: Next) -> Response {
    if auth.allows(request.headers().get(header::AUTHORIZATION)).await {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, CHALLENGE)], "Unauthorized\n").into_response()
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
        assert!(!auth.allows(None).await, "no header");
        assert!(!auth.allows(Some(&header("prometheus", "wrong"))).await, "wrong password");
        assert!(!auth.allows(Some(&header("nobody", "s3cret:with colon"))).await, "unknown user");
        assert!(auth.verified.lock().unwrap().is_empty(), "failures must not be remembered");
        assert!(auth.allows(Some(&header("prometheus", "s3cret:with colon"))).await);
        assert_eq!(auth.verified.lock().unwrap().len(), 1, "a success is remembered");
        assert!(auth.allows(Some(&header("prometheus", "s3cret:with colon"))).await);
        assert!(!auth.allows(Some(&header("prometheus", "s3cret"))).await, "a prefix is not the password");
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
