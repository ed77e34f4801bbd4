//! Sign-in links, sessions and CSRF tokens.
//!
//! - A link's token and a session's secret are 244 random bits (two v4 UUIDs); the store keeps
//!   only their SHA-256. A token is used once and expires after `[console] link_ttl_secs`.
//! - The session cookie is `__Host-xinqiao-console`: Secure, HttpOnly, SameSite=Strict, Path=/.
//! - A form's CSRF token is SHA-256 of a label and the session secret: nothing to store, and
//!   worthless without the cookie, which another site can neither read nor send.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use xinqiao_domain::identity::Principal;
use xinqiao_proto::v1 as pb;
use xinqiao_proto::v1::console_service_server::ConsoleService;
use xinqiao_store::{ConsoleSession, SignInToken, Store};

use crate::audit::CallNote;
use crate::auth::Authenticator;
use crate::status::to_status;

pub(crate) const COOKIE: &str = "__Host-xinqiao-console";

/// A fresh secret: 244 random bits as 64 hex digits.
pub(crate) fn secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

pub(crate) fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The CSRF token of the session whose secret this is.
pub(crate) fn csrf_token(session_secret: &str) -> String {
    hash(&format!("xinqiao-console-csrf:{session_secret}"))
}

/// Compares without stopping at the first difference.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session cookie that holds `secret` for `ttl`.
pub(crate) fn set_cookie(secret: &str, ttl: chrono::Duration) -> String {
    format!(
        "{COOKIE}={secret}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        ttl.num_seconds()
    )
}

pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session secret in a request's cookies, if any.
pub(crate) fn cookie_secret(headers: &http::HeaderMap) -> Option<String> {
    cookie_value(headers, COOKIE)
}

/// The value of the cookie `name` if it is a secret of ours (64 hex digits).
pub(crate) fn cookie_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The cookie a sign-in page sets and its button's form must match: SameSite=Strict, so a form
/// posted from another site (to sign a person in as someone else) does not carry it.
pub(crate) const SIGN_IN_COOKIE: &str = "__Host-xinqiao-sign-in";

pub(crate) fn sign_in_cookie(nonce: &str) -> String {
    format!("{SIGN_IN_COOKIE}={nonce}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=600")
}

pub(crate) fn clear_sign_in_cookie() -> String {
    format!("{SIGN_IN_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Starts a session for `principal`; returns its secret.
pub(crate) async fn start_session(
    store: &dyn Store,
    principal: &Principal,
    ttl: chrono::Duration,
    now: DateTime<Utc>,
) -> xinqiao_domain::Result<String> {
    let secret = secret();
    store
        .create_console_session(&ConsoleSession {
            session_hash: hash(&secret),
            principal: principal.uri(),
            created_at: now,
            expires_at: now + ttl,
        })
        .await?;
    Ok(secret)
}

/// The identity of a live session, if `secret` is one.
pub(crate) async fn session_principal(
    store: &dyn Store,
    secret: &str,
    now: DateTime<Utc>,
) -> xinqiao_domain::Result<Option<Principal>> {
    Ok(store
        .get_console_session(&hash(secret), now)
        .await?
        .and_then(|s| Principal::from_uri(&s.principal)))
}

/// How often expired links and sessions are forgotten.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Forgets expired links and sessions now and then (each hub node does; the deletes are
/// idempotent), until the hub stops.
pub fn keep_purging(store: Arc<dyn Store>, mut stopping: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => match store.purge_console(crate::clock::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(forgotten = n, "expired console links and sessions"),
                    Err(error) => tracing::warn!(%error, "expired console sessions could not be forgotten"),
                },
                _ = stopping.changed() => return,
            }
        }
    });
}

/// Where the links the hub mints point.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// `[console] public_url`, or the console's listen address when it names a host.
    pub console_url: Option<String>,
    /// The port browsers reach the console on.
    pub console_port: u16,
    pub ttl: chrono::Duration,
}

impl LinkSettings {
    pub fn new(settings: &crate::config::ConsoleSettings, console_addr: std::net::SocketAddr) -> LinkSettings {
        let ttl = settings.link_ttl_secs.unwrap_or(600).clamp(30, 24 * 3600);
        let console_url = settings
            .public_url
            .clone()
            .or_else(|| (!console_addr.ip().is_unspecified()).then(|| format!("https://{console_addr}")));
        LinkSettings {
            console_url,
            console_port: console_addr.port(),
            ttl: chrono::Duration::seconds(i64::try_from(ttl).unwrap_or(600)),
        }
    }
}

/// `ConsoleService`: sign-in links for the caller's own identity.
pub struct ConsoleApi {
    store: Arc<dyn Store>,
    auth: Authenticator,
    links: LinkSettings,
}

impl ConsoleApi {
    pub fn new(store: Arc<dyn Store>, auth: Authenticator, links: LinkSettings) -> ConsoleApi {
        ConsoleApi { store, auth, links }
    }
}

#[tonic::async_trait]
impl ConsoleService for ConsoleApi {
    async fn create_sign_in_link(
        &self,
        request: Request<pb::CreateSignInLinkRequest>,
    ) -> Result<Response<pb::SignInLink>, Status> {
        // Evaluators too: the scorecard is their page.
        let caller = self.auth.anyone(&request).await.map_err(to_status)?;
        // The certificate's own identity, and only a person's: a link is for a browser.
        let principal = request
            .extensions()
            .get::<crate::tls::PeerInfo>()
            .and_then(|peer| peer.principal.clone())
            .filter(|p| {
                matches!(
                    p,
                    Principal::Department(_) | Principal::Admin(_) | Principal::Evaluator(_)
                )
            })
            .ok_or_else(|| {
                Status::permission_denied("a sign-in link is for a department, the admin or an evaluator")
            })?;
        let note = CallNote::of(&request);
        note.about(&principal.uri(), caller.department().unwrap_or_default());
        let now = crate::clock::now();
        let token = secret();
        let expires_at = now + self.links.ttl;
        self.store
            .create_sign_in_token(&SignInToken {
                token_hash: hash(&token),
                principal: principal.uri(),
                created_at: now,
                expires_at,
            })
            .await
            .map_err(to_status)?;
        note.detail("expires_at", expires_at.to_rfc3339());
        Ok(Response::new(pb::SignInLink {
            path: format!("/console/sign-in?token={token}"),
            token,
            console_url: self.links.console_url.clone().unwrap_or_default(),
            console_port: u32::from(self.links.console_port),
            identity: principal.uri(),
            expires_at: Some(prost_types::Timestamp {
                seconds: expires_at.timestamp(),
                nanos: 0,
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_distinct_and_hashed() {
        let (a, b) = (secret(), secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), a);
        assert_ne!(csrf_token(&a), hash(&a));
    }

    #[test]
    fn the_session_cookie_is_read_only_when_well_formed() {
        let mut headers = http::HeaderMap::new();
        let s = secret();
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_str(&format!("a=b; {COOKIE}={s}")).expect("header"),
        );
        assert_eq!(cookie_secret(&headers), Some(s));
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_static("__Host-xinqiao-console=<script>"),
        );
        assert_eq!(cookie_secret(&headers), None);
        assert!(set_cookie("x", chrono::Duration::hours(1)).contains("Secure; HttpOnly; SameSite=Strict"));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
