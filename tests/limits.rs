//! Limits with state, and the configurable ones: SSE streams per node (503) and per identity
//! (429), emits per second per publisher and for the emit key (429), the channel-name length,
//! slow request heads and bodies, a panicking authorizer (500), JWT `aud`/`iss`, and limits that
//! cannot work together refused at start. Each refusal is JSON naming the limit and its value.

#[macro_use]
#[allow(unused_macros)]
mod support;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use support::{
    assert_error, get_json, hs256, hyper_server, msg, schema_path, unix_now, SseReader, TestServer, EMIT_KEY,
    JWT_SECRET,
};
use tidings::auth::{Action, AuthError, AuthRequest, Authorizer, BoxFuture, Identity};
use tidings::{Config, JwtAuthorizer, Limits, MemoryStore, Tidings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn user(sub: &str) -> String {
    hs256(json!({ "sub": sub, "exp": unix_now() + 600, "subscribe": ["room:*"], "publish": ["room:*"] }))
}

fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    f(&mut l);
    l
}

async fn server(tweak: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start(Arc::new(MemoryStore::default()), tweak).await
}

/// GET with an optional bearer token: status, headers, JSON body (Null for a stream).
async fn get(url: &str, bearer: Option<&str>) -> (u16, HeaderMap, Value) {
    match bearer {
        Some(t) => get_json(url, &[("authorization", &format!("Bearer {t}"))]).await,
        None => get_json(url, &[]).await,
    }
}

/// An open stream: the response is kept so the connection stays up until dropped.
async fn open(url: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r
}

async fn post_emit(base: &str, bearer: &str, channel: &str) -> (u16, HeaderMap, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/emit"))
        .bearer_auth(bearer)
        .json(&json!({ "channel": channel, "event": "chat.message", "data": msg("hi") }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap())
}

/// A refusal over a limit: the JSON error (status, code, a message naming `mentions`), the
/// `limit` it names and its `Retry-After` header.
fn assert_over_limit(
    (status, headers, body): &(u16, HeaderMap, Value),
    want_status: u16,
    code: &str,
    mentions: &[&str],
    limit: u64,
    retry_after: &str,
) {
    assert_error(*status, body, want_status, code, mentions);
    assert_eq!(body["limit"], limit, "{body}");
    assert_eq!(headers["retry-after"], retry_after);
}

/// Polls until `f` holds, for up to 5 s.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn streams_per_node_are_capped_with_503_on_both_paths_and_freed_on_close() {
    let tweak = |c: Config| c.limits(limits(|l| l.max_connections = 3));
    let s = server(tweak).await;
    let base_hyper = hyper_server(tweak).await;
    for base in [s.url(""), base_hyper] {
        let url = format!("{base}/realtime?channel=room:1");
        let mut streams = Vec::new();
        for _ in 0..3 {
            streams.push(open(&url, None).await);
        }
        let refused = get(&url, None).await;
        assert_over_limit(
            &refused,
            503,
            "node_full",
            &["3 streams", "max_connections"],
            3,
            "5",
        );
        // Emits and reads still work while the node is full.
        assert_eq!(post_emit(&base, EMIT_KEY, "room:1").await.0, 200);
        assert_eq!(get(&format!("{base}/health"), None).await.0, 200);
        // A client that leaves frees its place.
        streams.pop();
        eventually("a freed stream slot", async || get(&url, None).await.0 != 503).await;
    }
    // /health reports the streams the standalone node holds.
    let (_, _, health) = get(&s.url("/health"), None).await;
    assert!(health["streams"].as_u64().unwrap() <= 3, "{health}");
}

#[tokio::test]
async fn streams_per_identity_are_capped_with_429_and_other_users_are_not_affected() {
    let tweak = |c: Config| {
        c.authorizer(JwtAuthorizer::hs256(JWT_SECRET))
            .limits(limits(|l| l.max_connections_per_identity = 2))
    };
    let s = server(tweak).await;
    let base_hyper = hyper_server(tweak).await;
    let (ada, bob) = (user("ada"), user("bob"));
    for base in [s.url(""), base_hyper] {
        let url = format!("{base}/realtime?channel=room:1");
        let first = open(&url, Some(&ada)).await;
        let _second = open(&url, Some(&ada)).await;
        let refused = get(&url, Some(&ada)).await;
        let mentions = ["2 streams", "max_connections_per_identity"];
        assert_over_limit(&refused, 429, "too_many_connections", &mentions, 2, "5");
        let _bob = open(&url, Some(&bob)).await;
        drop(first);
        eventually("ada's freed slot", async || get(&url, Some(&ada)).await.0 == 200).await;
    }
}

#[tokio::test]
async fn emits_per_second_per_publisher_are_limited_and_refused_emits_store_nothing() {
    let s = server(|c| {
        c.authorizer(JwtAuthorizer::hs256(JWT_SECRET))
            .limits(limits(|l| l.emits_per_second = NonZeroU32::new(5)))
    })
    .await;
    let base = s.url("");
    let (ada, bob) = (user("ada"), user("bob"));
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..8 {
        match post_emit(&base, &ada, "room:1").await {
            (200, _, _) => accepted += 1,
            other => {
                refused.get_or_insert(other);
            }
        }
    }
    // A burst of one second's worth, then refusals (8 requests take far less than a second).
    assert!((5..=6).contains(&accepted), "{accepted} accepted");
    let refused = refused.expect("some emits refused");
    let mentions = ["5 emits per second", "emits_per_second"];
    assert_over_limit(&refused, 429, "rate_limited", &mentions, 5, "1");
    // Other publishers, and the emit key (unlimited by default), are not affected.
    assert_eq!(post_emit(&base, &bob, "room:1").await.0, 200);
    for _ in 0..20 {
        assert_eq!(post_emit(&base, EMIT_KEY, "room:2").await.0, 200);
    }
    // Nothing refused was stored.
    let (_, _, history) = get(&s.url("/history?channel=room:1&limit=100"), Some(&ada)).await;
    assert_eq!(
        history["entries"].as_array().unwrap().len(),
        accepted + 1,
        "{history}"
    );
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(post_emit(&base, &ada, "room:1").await.0, 200);
}

#[tokio::test]
async fn the_emit_key_can_be_rate_limited_too() {
    let s = server(|c| c.limits(limits(|l| l.emit_key_emits_per_second = NonZeroU32::new(3)))).await;
    let base = s.url("");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(post_emit(&base, EMIT_KEY, "room:1").await);
    }
    let accepted = statuses.iter().filter(|(st, _, _)| *st == 200).count();
    assert!((3..=4).contains(&accepted), "{accepted} accepted");
    let (status, _, body) = statuses.into_iter().find(|(st, _, _)| *st != 200).unwrap();
    assert_error(status, &body, 429, "rate_limited", &["3 emits per second"]);
}

#[tokio::test]
async fn the_channel_name_length_is_configurable_everywhere() {
    let s = server(|c| c.limits(limits(|l| l.max_channel_len = 16))).await;
    let ok = "r".repeat(16);
    let long = "r".repeat(17);
    assert_eq!(post_emit(&s.url(""), EMIT_KEY, &ok).await.0, 200);
    let (status, _, body) = post_emit(&s.url(""), EMIT_KEY, &long).await;
    assert_error(
        status,
        &body,
        400,
        "invalid_channel",
        &["17 characters", "at most 16"],
    );
    assert_eq!(body["limit"], 16);
    for path in [
        format!("/realtime?channel={long}"),
        format!("/realtime?channel=a,{long}"),
        format!("/history?channel={long}"),
    ] {
        let (status, _, body) = get(&s.url(&path), None).await;
        assert_error(status, &body, 400, "invalid_channel", &["at most 16"]);
    }
    let _ok = SseReader::open(&s.url(&format!("/realtime?channel={ok}")), None).await;
    // The same limit for emits from Rust.
    let event = tidings_test_events::ChatMessage {
        text: "hi".parse().unwrap(),
        user: "ada".parse().unwrap(),
        reply_to: None,
        mentions: vec![],
    };
    let err = s.rt.channel(&long).emit(event).await.unwrap_err();
    assert!(err.to_string().contains("at most 16"), "{err}");

    // Longer names than the default, when configured.
    let s = server(|c| c.limits(limits(|l| l.max_channel_len = 200))).await;
    let name = "r".repeat(200);
    assert_eq!(post_emit(&s.url(""), EMIT_KEY, &name).await.0, 200);
    // A cursor naming it resumes: both stored events replay, the ids name the channel.
    s.emit_ok(&name, "chat.message", msg("two")).await;
    let url = s.url(&format!("/realtime?channel={name}"));
    let mut r = SseReader::open(&url, Some(&format!("{name}=0-0"))).await;
    let first = r.until("chat.message").await;
    let second = r.until("chat.message").await;
    assert_eq!(second.last().unwrap().json()["data"]["text"], "two", "{second:?}");
    assert!(first
        .last()
        .unwrap()
        .id
        .as_deref()
        .unwrap()
        .starts_with(&format!("{name}=")));
}

#[tokio::test]
async fn limits_that_cannot_work_together_are_refused_at_start() {
    for (bad, mention) in [
        (limits(|l| l.max_channel_len = 300), "at most 256"),
        (limits(|l| l.max_channels = 1000), "cursors up to"),
        (limits(|l| l.max_connections = 0), "max_connections is 0"),
    ] {
        let config = Config::default().schema(schema_path()).limits(bad);
        let err = Tidings::from_config(config).await.err().expect("refused");
        assert!(err.to_string().contains(mention), "{err}");
    }
    // The binary says so and exits non-zero.
    let out = std::process::Command::new(support::tidings_bin())
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--max-channel-len",
            "300",
            "--schema",
        ])
        .arg(schema_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_channel_len is 300; at most 256"), "{stderr}");
}

/// Writes `head` (and nothing more) and returns how long until the server closes the socket.
async fn time_until_closed(addr: std::net::SocketAddr, head: &[u8]) -> (Duration, Vec<u8>) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(head).await.unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), socket.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server kept a stalled socket open for 15 s");
    (start.elapsed(), got)
}

#[tokio::test]
async fn slow_heads_and_bodies_are_cut_off_at_the_configured_timeout() {
    let s = server(|c| c.limits(limits(|l| l.head_timeout = Duration::from_secs(1)))).await;
    // A partial head, then nothing.
    let (took, got) = time_until_closed(s.addr, b"GET /realtime?channel=a HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    // A kept-alive connection whose second head stalls: hyper's read timeout, same limit.
    let (took, got) = time_until_closed(
        s.addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost",
    )
    .await;
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    // A body that stops halfway: 408 naming the limit.
    let (took, got) = time_until_closed(
        s.addr,
        format!(
            "POST /emit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {EMIT_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"channel\":"
        )
        .as_bytes(),
    )
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("\"body_timeout\"") && text.contains("\"limit\":1"),
        "{text}"
    );
    // The node still serves.
    assert_eq!(get(&s.url("/health"), None).await.0, 200);
}

struct Panics;

impl Authorizer for Panics {
    fn authorize<'a>(
        &'a self,
        _req: &'a AuthRequest,
        _action: Action<'a>,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async { panic!("the session store is down") })
    }
}

#[tokio::test]
async fn a_panicking_authorizer_refuses_with_500_and_the_node_keeps_serving() {
    let s = server(|c| c.authorizer(Panics)).await;
    let base_hyper = hyper_server(|c| c.authorizer(Panics)).await;
    for base in [s.url(""), base_hyper.clone()] {
        for _ in 0..3 {
            let (status, _, body) = get(&format!("{base}/realtime?channel=room:1"), None).await;
            assert_error(status, &body, 500, "authorizer_failed", &["refused"]);
            assert!(
                !body.to_string().contains("session store"),
                "internal detail leaked: {body}"
            );
            let (status, _, body) = get(&format!("{base}/history?channel=room:1"), None).await;
            assert_error(status, &body, 500, "authorizer_failed", &[]);
        }
        // Publishing without the emit key asks the hook too.
        let (status, _, body) = post_emit(&base, "not-the-key", "room:1").await;
        assert_error(status, &body, 500, "authorizer_failed", &[]);
        // The emit key does not need the hook, and the node is up.
        assert_eq!(post_emit(&base, EMIT_KEY, "room:1").await.0, 200);
        assert_eq!(get(&format!("{base}/health"), None).await.0, 200);
    }
}

#[tokio::test]
async fn jwt_audience_and_issuer_are_checked_when_configured() {
    let s = server(|c| {
        c.authorizer(
            JwtAuthorizer::hs256(JWT_SECRET)
                .audience("tidings")
                .audience("tidings-staging")
                .issuer("https://auth.example"),
        )
    })
    .await;
    let url = s.url("/realtime?channel=room:1");
    let with = |extra: Value| {
        let mut claims = json!({ "sub": "ada", "exp": unix_now() + 600, "subscribe": ["room:*"] });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        hs256(claims)
    };
    let good = with(json!({ "aud": "tidings", "iss": "https://auth.example" }));
    assert_eq!(get(&url, Some(&good)).await.0, 200);
    let staging = with(json!({ "aud": ["other", "tidings-staging"], "iss": "https://auth.example" }));
    assert_eq!(get(&url, Some(&staging)).await.0, 200);
    for (claims, mention) in [
        (json!({ "iss": "https://auth.example" }), "\"aud\" is required"),
        (json!({ "aud": "tidings" }), "\"iss\" is required"),
        (
            json!({ "aud": "billing", "iss": "https://auth.example" }),
            "aud is not an accepted audience",
        ),
        (
            json!({ "aud": "tidings", "iss": "https://evil.example" }),
            "iss is not an accepted issuer",
        ),
    ] {
        let (status, _, body) = get(&url, Some(&with(claims.clone()))).await;
        assert_error(status, &body, 401, "unauthenticated", &[mention]);
    }
    // Without the option, aud and iss are not checked.
    let open_server = server(|c| c.authorizer(JwtAuthorizer::hs256(JWT_SECRET))).await;
    let any = with(json!({ "aud": "billing", "iss": "https://evil.example" }));
    assert_eq!(
        get(&open_server.url("/realtime?channel=room:1"), Some(&any))
            .await
            .0,
        200
    );
}
