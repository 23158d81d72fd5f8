//! Authentication and authorization: the [`Authorizer`] hook an application supplies, the
//! built-in [`JwtAuthorizer`], and private per-user channels.
//!
//! Every SSE stream (on both the hyper path and the standalone socket path), every history read
//! and every `POST /emit` that does not carry the emit key runs the configured
//! [`Config::authorizer`](crate::Config) first. After the hook, tidings itself enforces
//! [`Config::private_channels`](crate::Config): a channel such as `user:ada` matching the
//! pattern `user:{sub}` is readable only by the identity whose `sub` is `ada`, whatever the hook
//! said (fail closed).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::channel::Channel;

/// A boxed, sendable future, as [`Authorizer::authorize`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a request is about to do.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Action<'a> {
    /// Read these channels: an SSE stream, or a history read (one channel).
    Subscribe(&'a [Channel]),
    /// Emit on this channel over HTTP (without the emit key).
    Publish(&'a Channel),
}

/// The parts of a request an [`Authorizer`] sees: headers (with cookies) and the raw query.
#[derive(Clone, Debug, Default)]
pub struct AuthRequest {
    /// The request headers.
    pub headers: HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<String>,
}

impl AuthRequest {
    /// A request with these headers and query.
    pub fn new(headers: HeaderMap, query: Option<String>) -> Self {
        AuthRequest { headers, query }
    }

    /// The token of `Authorization: Bearer <token>`.
    pub fn bearer(&self) -> Option<&str> {
        let value = self.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    }

    /// The value of cookie `name` (the first one, over every `Cookie` header).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim().trim_matches('"'))
            .filter(|v| !v.is_empty())
    }

    /// The (decoded) value of query parameter `name`, the first when it repeats.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    }
}

/// Who a request is, as an [`Authorizer`] decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The subject (user id); `None` for an anonymous request.
    pub sub: Option<String>,
    /// When the credential expires: an open stream ends then with `event: tidings.expired`.
    pub expires_at: Option<SystemTime>,
    /// A display name, shown to others in presence (the JWT `name` claim).
    pub name: Option<String>,
    /// A filter every subscription of this identity is held to (the JWT `filter` claim): the
    /// client's own filter can narrow what it gets, never widen it. See the README's filters.
    pub filter: Option<serde_json::Value>,
}

impl Identity {
    /// An anonymous identity: it may read public channels only.
    pub fn anonymous() -> Self {
        Identity::default()
    }

    /// The identity of subject `sub`.
    pub fn user(sub: impl Into<String>) -> Self {
        Identity {
            sub: Some(sub.into()),
            expires_at: None,
            name: None,
            filter: None,
        }
    }

    /// Sets [`Identity::filter`].
    pub fn filter(mut self, filter: serde_json::Value) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Sets [`Identity::name`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets [`Identity::expires_at`].
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }
}

/// Why a request was refused; answered as a JSON error (`401 unauthenticated` or
/// `403 forbidden`) with the reason as its message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credential, or one that is invalid or expired: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential without the right to do this: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The authorizer itself failed (it panicked, or could not reach what it checks against):
    /// 500, with nothing internal in the answer; the reason is logged. The request is refused.
    #[error("{0}")]
    Failed(String),
}

/// The hook an embedding application supplies: decides who a request is and whether it may do
/// `action`. Runs before any stream opens and before any HTTP emit without the emit key.
///
/// ```
/// use tidings::auth::{Action, AuthError, AuthRequest, Authorizer, BoxFuture, Identity};
///
/// struct Sessions;
/// impl Authorizer for Sessions {
///     fn authorize<'a>(&'a self, req: &'a AuthRequest, _action: Action<'a>)
///         -> BoxFuture<'a, Result<Identity, AuthError>> {
///         Box::pin(async move {
///             match req.cookie("session") {
///                 Some(s) if s == "ada-session" => Ok(Identity::user("ada")),
///                 _ => Err(AuthError::Unauthenticated("sign in first".into())),
///             }
///         })
///     }
/// }
/// let config = tidings::Config::default().authorizer(Sessions);
/// # let _ = config;
/// ```
pub trait Authorizer: Send + Sync + 'static {
    /// Returns who the request is, or why it is refused.
    fn authorize<'a>(
        &'a self,
        req: &'a AuthRequest,
        action: Action<'a>,
    ) -> BoxFuture<'a, Result<Identity, AuthError>>;
}

/// The owner a private pattern gives `channel`: `None` when the channel is not private,
/// `Some(owner)` when it is (`owner` may be empty, or the pattern may have no `{sub}`: then no one
/// owns it and it is never readable).
fn private_owner<'c>(patterns: &[String], channel: &'c str) -> Option<&'c str> {
    for pattern in patterns {
        let owner = match pattern.split_once("{sub}") {
            Some((prefix, suffix)) => channel
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(suffix)),
            None => (pattern == channel).then_some(""),
        };
        if owner.is_some() {
            return owner;
        }
    }
    None
}

/// Runs the hook, turning a panic in it into [`AuthError::Failed`]: a buggy hook refuses the
/// request (500) instead of killing the connection's task without an answer.
async fn run_hook(
    hook: &dyn Authorizer,
    req: &AuthRequest,
    action: Action<'_>,
) -> Result<Identity, AuthError> {
    use futures_util::FutureExt as _;
    let call = std::panic::AssertUnwindSafe(async { hook.authorize(req, action).await });
    match call.catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(AuthError::Failed(format!("the authorizer panicked: {what}")))
        }
    }
}

/// Runs the hook (when there is one) for reading `channels`, then the private-channel rule.
pub(crate) async fn authorize_read(
    config: &crate::Config,
    req: &AuthRequest,
    channels: &[Channel],
) -> Result<Identity, AuthError> {
    let identity = match &config.authorizer {
        Some(hook) => run_hook(hook.as_ref(), req, Action::Subscribe(channels)).await?,
        None => Identity::anonymous(),
    };
    for channel in channels {
        let Some(owner) = private_owner(&config.private_channels, channel.as_str()) else {
            continue;
        };
        match identity.sub.as_deref() {
            None => {
                return Err(AuthError::Unauthenticated(format!(
                    "channel {:?} is private; authenticate as its owner",
                    channel.as_str()
                )))
            }
            Some(sub) if !owner.is_empty() && sub == owner => {}
            Some(_) => {
                return Err(AuthError::Forbidden(format!(
                    "channel {:?} is private to another user",
                    channel.as_str()
                )))
            }
        }
    }
    if let Some(at) = identity.expires_at {
        if at <= SystemTime::now() {
            return Err(AuthError::Unauthenticated("token expired".into()));
        }
    }
    Ok(identity)
}

/// Runs the hook for an HTTP emit on `channel`; without a hook, only the emit key publishes.
pub(crate) async fn authorize_publish(
    config: &crate::Config,
    req: &AuthRequest,
    channel: &Channel,
) -> Result<Identity, AuthError> {
    match &config.authorizer {
        Some(hook) => run_hook(hook.as_ref(), req, Action::Publish(channel)).await,
        None => Err(AuthError::Unauthenticated("wrong emit key".into())),
    }
}

/// Why a [`JwtAuthorizer`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("invalid JWT key: {0}")]
pub struct JwtKeyError(String);

/// The default name of the cookie a [`JwtAuthorizer`] reads.
pub const DEFAULT_TOKEN_COOKIE: &str = "tidings_token";

/// The built-in [`Authorizer`]: a JWT signed with HS256 (shared secret), RS256 or ES256 (public
/// key PEM), read from `Authorization: Bearer`, the `tidings_token` cookie (EventSource sends
/// only cookies) or the `token` query parameter.
///
/// Claims: `sub` (the user), `exp` (required, checked with zero leeway), `subscribe` and
/// `publish`: lists of channel patterns, where `{sub}` stands for the token's own `sub` and a
/// trailing `*` matches any rest (`room:*`, `user:{sub}`). `alg: none` and any algorithm other
/// than the configured one are rejected.
///
/// For publishing, only the `Authorization` header is read: a cookie is sent by browsers on
/// cross-site requests too, and must not be enough to emit.
pub struct JwtAuthorizer {
    key: DecodingKey,
    validation: Validation,
    cookie: String,
}

impl std::fmt::Debug for JwtAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthorizer")
            .field("algorithms", &self.validation.algorithms)
            .field("cookie", &self.cookie)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    filter: Option<serde_json::Value>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

impl JwtAuthorizer {
    fn with(key: DecodingKey, alg: Algorithm) -> Self {
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        JwtAuthorizer {
            key,
            validation,
            cookie: DEFAULT_TOKEN_COOKIE.into(),
        }
    }

    /// Accepts only tokens whose `aud` claim names `audience` (repeat for more than one
    /// accepted audience). Without this, `aud` is not checked.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        let v = &mut self.validation;
        v.aud.get_or_insert_with(Default::default).insert(audience.into());
        v.validate_aud = true;
        v.required_spec_claims.insert("aud".into());
        self
    }

    /// Accepts only tokens whose `iss` claim is `issuer` (repeat for more than one accepted
    /// issuer). Without this, `iss` is not checked.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        let v = &mut self.validation;
        v.iss.get_or_insert_with(Default::default).insert(issuer.into());
        v.required_spec_claims.insert("iss".into());
        self
    }

    /// HS256 with a shared secret.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Self {
        JwtAuthorizer::with(DecodingKey::from_secret(secret.as_ref()), Algorithm::HS256)
    }

    /// RS256 or ES256 (P-256), depending on the key in `pem` (a public key PEM).
    ///
    /// # Errors
    /// When `pem` is neither an RSA nor an EC public key.
    pub fn public_key_pem(pem: &[u8]) -> Result<Self, JwtKeyError> {
        let text = String::from_utf8_lossy(pem);
        if text.contains("BEGIN RSA PUBLIC KEY") {
            let key = DecodingKey::from_rsa_pem(pem).map_err(|e| JwtKeyError(e.to_string()))?;
            return Ok(JwtAuthorizer::with(key, Algorithm::RS256));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(JwtAuthorizer::with(key, Algorithm::ES256));
        }
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| JwtKeyError(e.to_string()))?;
        Ok(JwtAuthorizer::with(key, Algorithm::RS256))
    }

    /// Reads tokens from cookie `name` instead of `tidings_token`.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie = name.into();
        self
    }

    /// The algorithm tokens must be signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    fn token(&self, req: &AuthRequest, action: Action<'_>) -> Option<String> {
        if let Some(t) = req.bearer() {
            return Some(t.to_string());
        }
        if matches!(action, Action::Publish(_)) {
            return None;
        }
        req.cookie(&self.cookie)
            .map(str::to_string)
            .or_else(|| req.query_param("token"))
    }

    fn verify(&self, req: &AuthRequest, action: Action<'_>) -> Result<Identity, AuthError> {
        let token = self.token(req, action).ok_or_else(|| {
            AuthError::Unauthenticated(match action {
                Action::Publish(_) => {
                    "no credential; send Authorization: Bearer <emit key or JWT with publish rights>".into()
                }
                _ => format!(
                    "no token; send Authorization: Bearer <jwt>, cookie {}=<jwt>, or ?token=<jwt>",
                    self.cookie
                ),
            })
        })?;
        let data = jsonwebtoken::decode::<Claims>(&token, &self.key, &self.validation).map_err(|e| {
            AuthError::Unauthenticated(match e.kind() {
                ErrorKind::ExpiredSignature => "token expired".to_string(),
                ErrorKind::InvalidSignature => "invalid token: bad signature".to_string(),
                ErrorKind::InvalidAlgorithm => format!(
                    "invalid token: algorithm not accepted; tokens must be signed with {:?}",
                    self.algorithm()
                ),
                ErrorKind::InvalidAudience => "invalid token: aud is not an accepted audience".to_string(),
                ErrorKind::InvalidIssuer => "invalid token: iss is not an accepted issuer".to_string(),
                ErrorKind::MissingRequiredClaim(claim) => {
                    format!("invalid token: claim {claim:?} is required")
                }
                _ => format!("invalid token: {e}"),
            })
        })?;
        let claims = data.claims;
        let allowed = |patterns: &[String], channel: &Channel| {
            patterns
                .iter()
                .any(|p| pattern_matches(p, claims.sub.as_deref(), channel.as_str()))
        };
        match action {
            Action::Subscribe(channels) => {
                if let Some(c) = channels.iter().find(|c| !allowed(&claims.subscribe, c)) {
                    return Err(AuthError::Forbidden(format!(
                        "token does not allow subscribing to {:?}",
                        c.as_str()
                    )));
                }
            }
            Action::Publish(c) => {
                if !allowed(&claims.publish, c) {
                    return Err(AuthError::Forbidden(format!(
                        "token does not allow publishing to {:?}",
                        c.as_str()
                    )));
                }
            }
        }
        Ok(Identity {
            sub: claims.sub,
            name: claims.name,
            filter: claims.filter,
            // An `exp` past what the clock can hold never arrives: no deadline.
            expires_at: UNIX_EPOCH.checked_add(Duration::from_secs(claims.exp)),
        })
    }
}

impl Authorizer for JwtAuthorizer {
    fn authorize<'a>(
        &'a self,
        req: &'a AuthRequest,
        action: Action<'a>,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(std::future::ready(self.verify(req, action)))
    }
}

/// Whether `pattern` (with `{sub}` placeholders and an optional trailing `*`) matches `channel`.
/// A pattern with `{sub}` matches nothing when the token has no `sub`.
pub fn pattern_matches(pattern: &str, sub: Option<&str>, channel: &str) -> bool {
    // The wildcard is the pattern's own trailing `*`, found before `{sub}` is filled in: a `sub`
    // such as `*` or `b*` is matched literally and never widens the pattern.
    let (literal, wildcard) = match pattern.strip_suffix('*') {
        Some(prefix) => (prefix, true),
        None => (pattern, false),
    };
    let filled;
    let literal = if literal.contains("{sub}") {
        match sub {
            Some(s) if !s.is_empty() => {
                filled = literal.replace("{sub}", s);
                filled.as_str()
            }
            _ => return false,
        }
    } else {
        literal
    };
    if wildcard {
        channel.starts_with(literal)
    } else {
        channel == literal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(pattern_matches("room:*", None, "room:1"));
        assert!(pattern_matches("*", None, "anything"));
        assert!(!pattern_matches("room:*", None, "user:1"));
        assert!(pattern_matches("user:{sub}", Some("ada"), "user:ada"));
        // A sub is literal: `*` in it is no wildcard.
        assert!(!pattern_matches("inbox:{sub}", Some("*"), "inbox:bob"));
        assert!(!pattern_matches("inbox:{sub}", Some("b*"), "inbox:bob"));
        assert!(pattern_matches("inbox:{sub}", Some("*"), "inbox:*"));
        assert!(pattern_matches("team:{sub}:*", Some("ada"), "team:ada:x"));
        assert!(!pattern_matches("team:{sub}:*", Some("*"), "team:bob:x"));
        assert!(!pattern_matches("user:{sub}", Some("ada"), "user:bob"));
        assert!(!pattern_matches("user:{sub}", Some("ada"), "user:ada2"));
        assert!(!pattern_matches("user:{sub}", None, "user:ada"));
        assert!(pattern_matches("user:{sub}:*", Some("ada"), "user:ada:x"));
    }

    #[test]
    fn private_owners() {
        let p = vec!["user:{sub}".to_string(), "admin".to_string()];
        assert_eq!(private_owner(&p, "user:ada"), Some("ada"));
        assert_eq!(private_owner(&p, "user:"), Some(""));
        assert_eq!(private_owner(&p, "admin"), Some(""));
        assert_eq!(private_owner(&p, "room:1"), None);
    }

    #[test]
    fn request_helpers() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; tidings_token=abc ; b=2".parse().unwrap());
        h.insert(header::AUTHORIZATION, "bearer xyz".parse().unwrap());
        let r = AuthRequest::new(h, Some("channel=a&token=q%2Bt".into()));
        assert_eq!(r.cookie("tidings_token"), Some("abc"));
        assert_eq!(r.cookie("c"), None);
        assert_eq!(r.bearer(), Some("xyz"));
        assert_eq!(r.query_param("token").as_deref(), Some("q+t"));
    }
}
