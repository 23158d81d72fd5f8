//! Authentication: the built-in JWT authorizer (HS256, ES256, RS256) with tokens from the
//! Authorization header, a cookie and the query; private per-user channels (401/403, also behind
//! a permissive custom hook); publish rights on `POST /emit`; a stream that ends with
//! `tidings.expired` when its token expires; CORS. SSE checks run on both the standalone socket
//! path (`tidings::serve`) and the hyper path (`tidings::router`).

#[macro_use]
#[allow(unused_macros)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::{
    assert_error, get_json, hs256, hyper_server, msg, unix_now, SseReader, TestServer, EMIT_KEY, JWT_SECRET,
};
use tidings::auth::{Action, AuthError, AuthRequest, Authorizer, BoxFuture, Identity};
use tidings::{Config, JwtAuthorizer, MemoryStore};

fn claims(sub: &str, subscribe: &[&str], publish: &[&str]) -> Value {
    json!({ "sub": sub, "exp": unix_now() + 600, "subscribe": subscribe, "publish": publish })
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn jwt_config(c: Config) -> Config {
    c.authorizer(JwtAuthorizer::hs256(JWT_SECRET))
        .private_channel("user:{sub}")
        .private_channel("notif:{sub}")
}

async fn server(tweak: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start(Arc::new(MemoryStore::default()), tweak).await
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn cookie(t: &str) -> String {
    format!("other=1; tidings_token={t}")
}

#[tokio::test]
async fn hs256_tokens_from_header_cookie_and_query() {
    let s = server(jwt_config).await;
    let url = s.url("/realtime?channel=room:1");
    let good = hs256(claims("ada", &["room:*"], &[]));
    assert_eq!(get_json(&url, &[("authorization", &bearer(&good))]).await.0, 200);
    assert_eq!(get_json(&url, &[("cookie", &cookie(&good))]).await.0, 200);
    assert_eq!(get_json(&format!("{url}&token={good}"), &[]).await.0, 200);
    // History reads the same way.
    let (status, _, body) = get_json(&s.url("/history?channel=room:1"), &[("cookie", &cookie(&good))]).await;
    assert_eq!(status, 200, "{body}");

    let (status, _, body) = get_json(&url, &[]).await;
    assert_error(
        status,
        &body,
        401,
        "unauthenticated",
        &["no token", "tidings_token"],
    );

    let expired = hs256(json!({ "sub": "ada", "exp": unix_now() - 5, "subscribe": ["room:*"] }));
    for h in [("authorization", bearer(&expired)), ("cookie", cookie(&expired))] {
        let (status, _, body) = get_json(&url, &[(h.0, &h.1)]).await;
        assert_error(status, &body, 401, "unauthenticated", &["token expired"]);
    }
    let (status, _, body) = get_json(&format!("{url}&token={expired}"), &[]).await;
    assert_error(status, &body, 401, "unauthenticated", &["token expired"]);

    // Tampered: the payload swapped for one granting more, the signature kept.
    let other = hs256(claims("ada", &["*"], &[]));
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[1] = other.split('.').nth(1).unwrap();
    let tampered = parts.join(".");
    let (status, _, body) = get_json(&url, &[("authorization", &bearer(&tampered))]).await;
    assert_error(status, &body, 401, "unauthenticated", &["signature"]);
    let wrong_secret = encode(
        &Header::new(Algorithm::HS256),
        &claims("ada", &["room:*"], &[]),
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    assert_eq!(get_json(&url, &[("cookie", &cookie(&wrong_secret))]).await.0, 401);

    // alg: none, unsigned.
    let none = format!(
        "{}.{}.",
        base64_url(br#"{"alg":"none","typ":"JWT"}"#),
        base64_url(claims("ada", &["room:*"], &[]).to_string().as_bytes())
    );
    let (status, _, body) = get_json(&format!("{url}&token={none}"), &[]).await;
    assert_error(status, &body, 401, "unauthenticated", &["invalid token"]);

    // Another algorithm, even with the right secret.
    let hs384 = encode(
        &Header::new(Algorithm::HS384),
        &claims("ada", &["room:*"], &[]),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let (status, _, body) = get_json(&url, &[("authorization", &bearer(&hs384))]).await;
    assert_error(status, &body, 401, "unauthenticated", &["algorithm"]);

    // No exp: refused.
    let no_exp = hs256(json!({ "sub": "ada", "subscribe": ["room:*"] }));
    assert_eq!(
        get_json(&url, &[("authorization", &bearer(&no_exp))]).await.0,
        401
    );

    // Valid, but not for this channel.
    let narrow = hs256(claims("ada", &["room:2"], &[]));
    let (status, _, body) = get_json(&url, &[("authorization", &bearer(&narrow))]).await;
    assert_error(status, &body, 403, "forbidden", &["room:1"]);
}

/// Base64url without padding, for hand-made tokens.
fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn es256_and_rs256_public_keys() {
    for (alg, private, public) in [
        (Algorithm::ES256, "es256_private.pem", "es256_public.pem"),
        (Algorithm::RS256, "rs256_private.pem", "rs256_public.pem"),
    ] {
        let jwt = JwtAuthorizer::public_key_pem(&fixture(public)).unwrap();
        assert_eq!(jwt.algorithm(), alg);
        let s = server(|c| c.authorizer(jwt)).await;
        let url = s.url("/realtime?channel=room:1");
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&fixture(private)).unwrap(),
            _ => EncodingKey::from_rsa_pem(&fixture(private)).unwrap(),
        };
        let good = encode(&Header::new(alg), &claims("ada", &["room:*"], &[]), &key).unwrap();
        assert_eq!(
            get_json(&url, &[("authorization", &bearer(&good))]).await.0,
            200,
            "{alg:?}"
        );
        // Key confusion: HS256 signed with the public key as the secret.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims("ada", &["room:*"], &[]),
            &EncodingKey::from_secret(&fixture(public)),
        )
        .unwrap();
        let (status, _, body) = get_json(&url, &[("authorization", &bearer(&confused))]).await;
        assert_error(status, &body, 401, "unauthenticated", &["algorithm"]);
        let expired = encode(
            &Header::new(alg),
            &json!({ "sub": "ada", "exp": unix_now() - 1, "subscribe": ["room:*"] }),
            &key,
        )
        .unwrap();
        assert_eq!(get_json(&url, &[("cookie", &cookie(&expired))]).await.0, 401);
    }
}

async fn private_channels_on(base: &str) {
    let ada = hs256(claims("ada", &["user:{sub}", "notif:*", "room:*"], &[]));
    let bob_everything = hs256(claims("bob", &["*"], &[]));
    for path in ["/realtime?channel=user:ada", "/history?channel=user:ada"] {
        let url = format!("{base}{path}");
        assert_eq!(
            get_json(&url, &[("cookie", &cookie(&ada))]).await.0,
            200,
            "{path}"
        );
        let (status, _, body) = get_json(&url, &[]).await;
        assert_error(status, &body, 401, "unauthenticated", &[]);
        // Bob's token allows every channel, but user:ada is Ada's.
        let (status, _, body) = get_json(&url, &[("authorization", &bearer(&bob_everything))]).await;
        assert_error(status, &body, 403, "forbidden", &["private"]);
    }
    let url = format!("{base}/realtime?channel=room:1,notif:bob");
    let (status, _, body) = get_json(&url, &[("cookie", &cookie(&ada))]).await;
    assert_error(status, &body, 403, "forbidden", &["notif:bob"]);
    let url = format!("{base}/realtime?channel=room:1,notif:ada");
    assert_eq!(get_json(&url, &[("cookie", &cookie(&ada))]).await.0, 200);
}

#[tokio::test]
async fn private_channels_401_403_200_on_both_paths() {
    let s = server(jwt_config).await;
    private_channels_on(&s.url("")).await;
    private_channels_on(&hyper_server(jwt_config).await).await;
}

/// A hook that lets everything through as whoever `x-user` names.
struct Permissive;

impl Authorizer for Permissive {
    fn authorize<'a>(
        &'a self,
        req: &'a AuthRequest,
        _action: Action<'a>,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            Ok(match req.headers.get("x-user") {
                Some(u) => Identity::user(u.to_str().unwrap()),
                None => Identity::anonymous(),
            })
        })
    }
}

#[tokio::test]
async fn a_permissive_hook_still_cannot_open_another_users_channel() {
    let tweak = |c: Config| c.authorizer(Permissive).private_channel("user:{sub}");
    for base in [server(tweak).await.url(""), hyper_server(tweak).await] {
        let url = format!("{base}/realtime?channel=user:bob");
        assert_eq!(get_json(&url, &[("x-user", "ada")]).await.0, 403);
        assert_eq!(get_json(&url, &[]).await.0, 401);
        assert_eq!(get_json(&url, &[("x-user", "bob")]).await.0, 200);
        assert_eq!(
            get_json(&format!("{base}/realtime?channel=room:1"), &[]).await.0,
            200
        );
    }
    // Private channels without any authorizer: no one can read them.
    let s = server(|c| c.private_channel("user:{sub}").private_channel("admin")).await;
    assert_eq!(get_json(&s.url("/realtime?channel=user:ada"), &[]).await.0, 401);
    assert_eq!(get_json(&s.url("/history?channel=admin"), &[]).await.0, 401);
    assert_eq!(get_json(&s.url("/realtime?channel=room:1"), &[]).await.0, 200);
    let s = server(|c| c.authorizer(Permissive).private_channel("admin")).await;
    assert_eq!(
        get_json(&s.url("/realtime?channel=admin"), &[("x-user", "root")])
            .await
            .0,
        403
    );
}

async fn post_emit(s: &TestServer, channel: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(s.url("/emit"))
        .json(&json!({ "channel": channel, "event": "chat.message", "data": msg("hi") }));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn emit_needs_the_key_or_a_jwt_with_publish_rights() {
    let s = server(jwt_config).await;
    assert_eq!(
        post_emit(&s, "room:1", &[("authorization", &bearer(EMIT_KEY))])
            .await
            .0,
        200
    );
    let publisher = hs256(claims("svc", &[], &["room:*", "user:{sub}"]));
    assert_eq!(
        post_emit(&s, "room:1", &[("authorization", &bearer(&publisher))])
            .await
            .0,
        200
    );
    assert_eq!(
        post_emit(&s, "user:svc", &[("authorization", &bearer(&publisher))])
            .await
            .0,
        200
    );
    let (status, body) = post_emit(&s, "user:ada", &[("authorization", &bearer(&publisher))]).await;
    assert_error(status, &body, 403, "forbidden", &["publishing", "user:ada"]);
    let reader = hs256(claims("ada", &["*"], &[]));
    let (status, body) = post_emit(&s, "room:1", &[("authorization", &bearer(&reader))]).await;
    assert_error(status, &body, 403, "forbidden", &["room:1"]);
    // A cookie is not a publisher credential (browsers send it cross-site).
    let (status, body) = post_emit(&s, "room:1", &[("cookie", &cookie(&publisher))]).await;
    assert_error(status, &body, 401, "unauthenticated", &["Authorization"]);
    let (status, _) = post_emit(&s, "room:1", &[]).await;
    assert_eq!(status, 401);
    let expired = hs256(json!({ "sub": "svc", "exp": unix_now() - 1, "publish": ["*"] }));
    let (status, body) = post_emit(&s, "room:1", &[("authorization", &bearer(&expired))]).await;
    assert_error(status, &body, 401, "unauthenticated", &["expired"]);
    let (status, body) = post_emit(&s, "room:1", &[("authorization", &bearer("wrong-key"))]).await;
    assert_error(status, &body, 401, "unauthenticated", &["invalid token"]);
    let history =
        s.rt.channel("room:1")
            .history(tidings::Range::Latest, 10)
            .await
            .unwrap();
    assert_eq!(history.len(), 2);

    // Without an authorizer: the emit key only, as before.
    let s = server(|c| c).await;
    let (status, body) = post_emit(&s, "room:1", &[("authorization", &bearer(&publisher))]).await;
    assert_error(status, &body, 401, "unauthorized", &["wrong emit key"]);
}

async fn expiry_on(base: &str) {
    let token = hs256(json!({ "sub": "ada", "exp": unix_now() + 2, "subscribe": ["room:*"] }));
    let mut r = SseReader::open(&format!("{base}/realtime?channel=room:1&token={token}"), None).await;
    let frames = r.until("tidings.ready").await;
    let ready = frames.last().unwrap().clone();
    let expired = r
        .next_timeout(Duration::from_secs(6))
        .await
        .expect("an expired frame");
    assert_eq!(expired.event.as_deref(), Some("tidings.expired"), "{expired:?}");
    assert_eq!(expired.id, ready.id);
    assert_eq!(
        expired.json(),
        json!({ "reason": "token expired", "cursor": ready.id.clone().unwrap() })
    );
    assert_eq!(
        r.next_timeout(Duration::from_secs(5)).await,
        None,
        "the stream ends"
    );
}

#[tokio::test]
async fn an_expiring_token_ends_the_stream_with_tidings_expired_on_both_paths() {
    let s = server(jwt_config).await;
    let h = hyper_server(jwt_config).await;
    let raw = s.url("");
    tokio::join!(expiry_on(&raw), expiry_on(&h));
}

async fn cors_on(base: &str, allowed: bool) {
    let good = "https://app.example";
    for path in ["/history?channel=room:1", "/realtime?channel=room:1"] {
        let url = format!("{base}{path}");
        let (status, h, _) = get_json(&url, &[("origin", good)]).await;
        assert_eq!(status, 200);
        if allowed {
            assert_eq!(h["access-control-allow-origin"], good, "{path}");
            assert_eq!(h["access-control-allow-credentials"], "true", "{path}");
        } else {
            assert!(h.get("access-control-allow-origin").is_none(), "{path}");
        }
        let (_, h, _) = get_json(&url, &[("origin", "https://evil.example")]).await;
        assert!(h.get("access-control-allow-origin").is_none(), "{path}");
        let (_, h, _) = get_json(&url, &[]).await;
        assert!(h.get("access-control-allow-origin").is_none(), "{path}");
    }
    // An error on the stream path carries the CORS headers too, so the page can read it.
    let (status, h, _) = get_json(&format!("{base}/realtime"), &[("origin", good)]).await;
    assert_eq!(status, 400);
    assert_eq!(h.get("access-control-allow-origin").is_some(), allowed);
    for (origin, ok) in [(good, allowed), ("https://evil.example", false)] {
        for path in ["/emit", "/realtime"] {
            let r = reqwest::Client::new()
                .request(reqwest::Method::OPTIONS, format!("{base}{path}"))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "authorization, content-type")
                .send()
                .await
                .unwrap();
            let acao = r.headers().get("access-control-allow-origin");
            assert_eq!(
                acao.is_some(),
                ok,
                "preflight {path} from {origin}: {:?}",
                r.headers()
            );
            if ok {
                assert_eq!(acao.unwrap(), origin);
                assert_eq!(r.headers()["access-control-allow-credentials"], "true");
            }
        }
    }
}

#[tokio::test]
async fn cors_is_same_origin_by_default_and_allows_listed_origins() {
    let s = server(|c| c.cors_origin("https://app.example")).await;
    cors_on(&s.url(""), true).await;
    cors_on(
        &hyper_server(|c| c.cors_origin("https://app.example")).await,
        true,
    )
    .await;
    let s = server(|c| c).await;
    cors_on(&s.url(""), false).await;
}

/// A token that is not valid yet (`nbf` in the future) is refused, on both read paths.
#[tokio::test]
async fn a_token_not_valid_yet_is_401() {
    let s = server(jwt_config).await;
    let early = hs256(
        json!({ "sub": "ada", "exp": unix_now() + 600, "nbf": unix_now() + 300, "subscribe": ["room:*"] }),
    );
    let now = hs256(
        json!({ "sub": "ada", "exp": unix_now() + 600, "nbf": unix_now() - 5, "subscribe": ["room:*"] }),
    );
    for path in ["/realtime?channel=room:1", "/history?channel=room:1"] {
        let (status, _, body) = get_json(&s.url(path), &[("authorization", &bearer(&early))]).await;
        assert_error(status, &body, 401, "unauthenticated", &[]);
        assert_eq!(
            get_json(&s.url(path), &[("authorization", &bearer(&now))])
                .await
                .0,
            200,
            "{path}"
        );
    }
}

/// A private pattern filled with an empty `sub` names no owner: `user:` and `admin` are not
/// readable by a token whose `sub` is "".
#[tokio::test]
async fn an_empty_sub_owns_no_private_channel() {
    let s = server(|c| jwt_config(c).private_channel("admin")).await;
    let nobody = hs256(claims("", &["user:*", "admin", "room:*"], &[]));
    for channel in ["user:", "admin"] {
        for path in ["realtime", "history"] {
            let (status, _, body) = get_json(
                &s.url(&format!("/{path}?channel={channel}")),
                &[("authorization", &bearer(&nobody))],
            )
            .await;
            assert_error(status, &body, 403, "forbidden", &[]);
        }
    }
    let url = s.url("/realtime?channel=room:1");
    assert_eq!(
        get_json(&url, &[("authorization", &bearer(&nobody))]).await.0,
        200
    );
}

/// A hook that answers with an identity whose credential already expired: refused on the read
/// paths, not served until the stream notices.
struct Expired;

impl Authorizer for Expired {
    fn authorize<'a>(
        &'a self,
        _req: &'a AuthRequest,
        _action: Action<'a>,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            Ok(Identity::user("ada").expires_at(std::time::SystemTime::now() - Duration::from_secs(1)))
        })
    }
}

#[tokio::test]
async fn an_identity_already_expired_is_401_on_history_and_realtime() {
    let s = server(|c| c.authorizer(Expired)).await;
    for path in ["/realtime?channel=room:1", "/history?channel=room:1"] {
        let (status, _, body) = get_json(&s.url(path), &[]).await;
        assert_error(status, &body, 401, "unauthenticated", &["expired"]);
    }
}
