//! Bad input, and that it cannot hurt: the rows of the table in SECURITY.md that no other suite
//! covers. Every refusal is checked for its exact status, its `error` code and a message naming
//! what was wrong; every test ends by checking that the server still answers. The last test fires
//! the whole battery at one server, on both stores, and checks that the events accepted before
//! and after it are stored, delivered and replayed exactly, in order, and nothing else.
//!
//! Requests that reqwest refuses to send (control bytes in headers, bare LF, conflicting framing
//! headers, URIs over 64 KiB) go over a raw TCP socket.

#[macro_use]
#[allow(unused_macros)]
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{
    assert_error, by_id, hs256, msg, post_emit_raw, redis_keys, unix_now, Backend, Frame, SseReader,
    TestServer, EMIT_KEY, JWT_SECRET,
};
use tidings::{Config, JwtAuthorizer, Limits, MemoryStore, Retention};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

on_both_backends!(after_every_bad_input_the_accepted_events_are_intact);

async fn start(b: &Backend, tweak: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start(b.store(Retention::default(), "t:").await, tweak).await
}

async fn memory(tweak: impl FnOnce(Config) -> Config) -> TestServer {
    TestServer::start(Arc::new(MemoryStore::default()), tweak).await
}

/// GET with extra headers: the status and, for a JSON answer, the body (Null for a stream, which
/// is not read).
async fn get_with(url: &str, headers: &[(&str, &[u8])]) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(url);
    for (name, value) in headers {
        req = req.header(*name, reqwest::header::HeaderValue::from_bytes(value).unwrap());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let is_json = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    (
        status,
        if is_json {
            r.json().await.unwrap()
        } else {
            Value::Null
        },
    )
}

async fn get(url: &str) -> (u16, Value) {
    get_with(url, &[]).await
}

fn key() -> String {
    format!("Bearer {EMIT_KEY}")
}

/// POST /emit of a JSON body with the emit key.
async fn emit_raw(s: &TestServer, body: impl Into<reqwest::Body>) -> (u16, Value) {
    post_emit_raw(s, Some(&key()), "application/json", body).await
}

/// Every stored entry of `channel`, oldest first.
async fn history(s: &TestServer, channel: &str) -> Vec<Value> {
    let (status, body) = get(&s.url(&format!("/history?channel={channel}&limit=1000"))).await;
    assert_eq!(status, 200, "{body}");
    body["entries"].as_array().unwrap().clone()
}

/// The server still answers `/health` promptly; returns its body.
async fn assert_serving(s: &TestServer) -> Value {
    let r = tokio::time::timeout(Duration::from_secs(5), reqwest::get(s.url("/health")))
        .await
        .expect("/health did not answer within 5 s")
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    body
}

/// Waits until `/health` counts `n` subscribers: refused or ended streams hold nothing.
async fn wait_for_subscribers(s: &TestServer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = assert_serving(s).await;
        if body["subscribers"] == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "subscribers stayed at {} (want {n})",
            body["subscribers"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Error messages quote what they refuse escaped: no raw control character comes back.
fn assert_message_escaped(body: &Value) {
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        !message.chars().any(|c| c.is_control()),
        "raw control character in {message:?}"
    );
}

/// What came back on a raw connection.
struct Raw {
    bytes: Vec<u8>,
    /// The server closed the connection (EOF or reset) before the wait ran out.
    closed: bool,
}

impl Raw {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status of the first response (0 when nothing came back).
    fn status(&self) -> u16 {
        let text = self.text();
        text.strip_prefix("HTTP/1.1 ")
            .or_else(|| text.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }

    /// The response head, lowercased.
    fn head(&self) -> String {
        let text = self.text();
        text.split("\r\n\r\n").next().unwrap_or("").to_ascii_lowercase()
    }

    /// The body of the first response as JSON (Null when it is not JSON).
    fn json(&self) -> Value {
        let text = self.text();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    /// How many responses came back.
    fn responses(&self) -> usize {
        self.text()
            .split("\r\n")
            .filter(|line| line.starts_with("HTTP/1."))
            .count()
    }
}

/// Writes `request` on a new connection, then reads until the server closes it, `until` shows up
/// in what came back, or `wait` passes.
async fn exchange(addr: SocketAddr, request: &[u8], until: Option<&str>, wait: Duration) -> Raw {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    // A server that answers before reading everything may reset the rest: still an answer.
    let _ = socket.write_all(request).await;
    let mut bytes = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    bytes.extend_from_slice(&buf[..n]);
                    if until.is_some_and(|u| String::from_utf8_lossy(&bytes).contains(u)) {
                        return false;
                    }
                }
            }
        }
    })
    .await
    .unwrap_or(false);
    Raw { bytes, closed }
}

/// A request that answers with a JSON error and closes (`Connection: close`).
async fn exchange_closed(addr: SocketAddr, request: &[u8]) -> Raw {
    let raw = exchange(addr, request, None, Duration::from_secs(10)).await;
    assert!(raw.closed, "still open after 10 s: {}", raw.text());
    raw
}

const WAIT_READY: Option<&str> = Some("event: tidings.ready");

fn jwt(c: Config) -> Config {
    c.authorizer(JwtAuthorizer::hs256(JWT_SECRET))
}

fn jwt_private(c: Config) -> Config {
    jwt(c).private_channel("user:{sub}")
}

// ---------------------------------------------------------------------------------------------
// Slow clients.
// ---------------------------------------------------------------------------------------------

/// Reads until the server closes `socket`: what it sent, and when it closed. Panics at `deadline`.
async fn wait_closed(mut socket: impl AsyncRead + Unpin, deadline: Instant) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let left = deadline.saturating_duration_since(Instant::now());
    let ended = tokio::time::timeout(left, async {
        let mut buf = [0u8; 1024];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "still open at the deadline; got {:?}",
        String::from_utf8_lossy(&got)
    );
    (got, Instant::now())
}

/// Writes `first`, then one byte of `drip` a second, until the server closes the socket.
fn drip(mut write: OwnedWriteHalf, first: Vec<u8>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if write.write_all(&first).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if write.write_all(b"a").await.is_err() {
                return;
            }
        }
    })
}

/// A kept-alive connection that has asked for `/health` once and read the answer.
async fn kept_alive(addr: SocketAddr) -> (OwnedReadHalf, OwnedWriteHalf) {
    let (mut read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
    write
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with('}') {
        let n = tokio::time::timeout(Duration::from_secs(5), read.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before answering /health");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    (read, write)
}

/// One slow client: a label, when its clock started, and the task that returns what the server
/// sent and when it closed the socket.
type Slow = (String, Instant, tokio::task::JoinHandle<(Vec<u8>, Instant)>);

/// Slow-loris, with the default head timeout: 200 clients that send part of a request head and
/// stall, one that sends its head a byte a second, one that sends nothing, a kept-alive
/// connection that goes idle after one request and one whose next head trickles in, and an
/// `/emit` whose body stalls. Each is dropped (the body: 408 `body_timeout`) between 1 s before
/// and 5 s after the timeout, with no other answer; meanwhile `/health`, emits and SSE streams are
/// served at once, and a stream older than the timeout stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_dropped_after_the_head_timeout_while_others_are_served() {
    let timeout = Limits::default().head_timeout;
    let s = memory(|c| c).await;
    let mut live = SseReader::open(&s.url("/realtime?channel=slow:room"), None).await;
    live.until("tidings.ready").await;
    let deadline = Instant::now() + timeout + Duration::from_secs(8);
    let mut slow: Vec<Slow> = Vec::new();
    let mut drips = Vec::new();

    for i in 0..200 {
        let mut socket = TcpStream::connect(s.addr).await.unwrap();
        let started = Instant::now();
        socket
            .write_all(b"GET /realtime?channel=slow:room HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let task = tokio::spawn(wait_closed(socket, deadline));
        slow.push((format!("partial head #{i}"), started, task));
    }

    let (read, write) = TcpStream::connect(s.addr).await.unwrap().into_split();
    let started = Instant::now();
    drips.push(drip(
        write,
        b"GET /realtime?channel=slow:room HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec(),
    ));
    slow.push((
        "a head a byte a second".into(),
        started,
        tokio::spawn(wait_closed(read, deadline)),
    ));

    let silent = TcpStream::connect(s.addr).await.unwrap();
    let started = Instant::now();
    slow.push((
        "nothing sent".into(),
        started,
        tokio::spawn(wait_closed(silent, deadline)),
    ));

    let (read, write) = kept_alive(s.addr).await;
    let started = Instant::now();
    slow.push((
        "kept alive, then idle".into(),
        started,
        tokio::spawn(async move {
            let _keep = write;
            wait_closed(read, deadline).await
        }),
    ));

    let (read, write) = kept_alive(s.addr).await;
    let started = Instant::now();
    drips.push(drip(write, b"GET /health HTTP/1.1\r\nX-Pad: ".to_vec()));
    slow.push((
        "kept alive, next head a byte a second".into(),
        started,
        tokio::spawn(wait_closed(read, deadline)),
    ));

    let mut stalled = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /emit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {EMIT_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"channel\":"
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    slow.push((
        "emit body that stalls".into(),
        started,
        tokio::spawn(wait_closed(stalled, deadline)),
    ));

    // Everyone else is served while they hang on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = Instant::now();
    assert_serving(&s).await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "/health took {:?}",
        asked.elapsed()
    );
    let id = s.emit_ok("slow:room", "chat.message", msg("during")).await;
    assert_eq!(live.next().await.unwrap().json()["id"], id);
    let mut fresh = SseReader::open(&s.url("/realtime?channel=slow:room"), None).await;
    fresh.until("tidings.ready").await;

    for (label, started, task) in slow {
        let (got, closed_at) = task.await.unwrap();
        let took = closed_at.duration_since(started);
        assert!(
            took + Duration::from_secs(1) >= timeout && took <= timeout + Duration::from_secs(5),
            "{label}: closed after {took:?}; the head timeout is {timeout:?}"
        );
        let text = String::from_utf8_lossy(&got);
        if label == "emit body that stalls" {
            assert!(text.starts_with("HTTP/1.1 408"), "{label}: {text}");
            assert!(text.contains("\"error\":\"body_timeout\""), "{label}: {text}");
        } else {
            assert!(got.is_empty(), "{label}: answered {text:?}");
        }
    }
    for d in drips {
        d.abort();
    }
    // The streams opened before and during are untouched by the head timeout.
    let id = s.emit_ok("slow:room", "chat.message", msg("after")).await;
    assert_eq!(live.next().await.unwrap().json()["id"], id);
    assert_eq!(fresh.next().await.unwrap().json()["id"], id);
    assert!(
        history(&s, "slow:room").await.len() == 2,
        "the stalled emit stored nothing"
    );
}

/// A body sent a byte at a time gets the same total deadline as a body that stalls (with a 1 s
/// head timeout here, so the test is quick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_body_sent_a_byte_at_a_time_is_cut_off_at_the_head_timeout() {
    let s = memory(|mut c| {
        c.limits.head_timeout = Duration::from_secs(1);
        c
    })
    .await;
    let (read, write) = TcpStream::connect(s.addr).await.unwrap().into_split();
    let head = format!(
        "POST /emit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {EMIT_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n{{"
    );
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let mut write = write;
        let _ = write.write_all(head.as_bytes()).await;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let (got, closed_at) = wait_closed(read, Instant::now() + Duration::from_secs(15)).await;
    trickle.abort();
    let text = String::from_utf8_lossy(&got);
    assert!(
        closed_at.duration_since(started) < Duration::from_secs(5),
        "closed after {:?}",
        closed_at.duration_since(started)
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"body_timeout\""), "{text}");
    assert_serving(&s).await;
}

// ---------------------------------------------------------------------------------------------
// Size: many channels, long heads.
// ---------------------------------------------------------------------------------------------

/// 10,000 channels on one connection, as a comma list (59 KB: past the socket path's head limit,
/// so hyper and axum answer) and as 1,000 repeated `channel=` (13 KB: the socket path): 400
/// `too_many_channels` naming the limit. 10,000 repeated `channel=` make a 139 KB URI: 414. At
/// the limit, a stream opens.
#[tokio::test]
async fn ten_thousand_channels_on_one_connection_are_refused_naming_the_limit() {
    let s = memory(|c| c).await;
    let names: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
    let (status, body) = get(&s.url(&format!("/realtime?channel={}", names.join(",")))).await;
    assert_error(
        status,
        &body,
        400,
        "too_many_channels",
        &["10000 channels", "at most 100"],
    );
    assert_eq!(body["limit"], 100);

    let repeated: String = names[..1000].iter().map(|n| format!("channel={n}&")).collect();
    let raw = exchange_closed(
        s.addr,
        format!("GET /realtime?{repeated} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await;
    assert_error(
        raw.status(),
        &raw.json(),
        400,
        "too_many_channels",
        &["1000 channels", "at most 100"],
    );

    let repeated: String = names.iter().map(|n| format!("channel={n}&")).collect();
    let raw = exchange_closed(
        s.addr,
        format!("GET /realtime?{repeated} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(raw.status(), 414, "{}", raw.head());

    // One history read is one channel: a list is not a name.
    let (status, body) = get(&s.url("/history?channel=c1,c2")).await;
    assert_error(status, &body, 400, "invalid_channel", &["','", "allowed are"]);

    let mut sse = SseReader::open(
        &s.url(&format!("/realtime?channel={}", names[..100].join(","))),
        None,
    )
    .await;
    let ready = sse.until("tidings.ready").await.pop().unwrap();
    assert_eq!(ready.json()["channels"].as_array().unwrap().len(), 100);
    drop(sse);
    assert_serving(&s).await;
}

/// Refusing a list of channels over the limit costs about as much as reading it: here 15,000
/// distinct names (60 KB, the most a URI holds) must be refused in well under a second.
#[tokio::test]
async fn refusing_thousands_of_channels_is_cheap() {
    let s = memory(|c| c).await;
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let mut names: Vec<String> = Vec::new();
    let mut len = 0;
    'fill: for a in &alphabet {
        for b in &alphabet {
            for c in &alphabet {
                names.push(format!("{a}{b}{c}"));
                len += 4;
                if len > 60_000 {
                    break 'fill;
                }
            }
        }
    }
    // The mechanism, not a clock: a name that is not allowed sits at the very end, so a refusal
    // for too many channels shows that reading stopped at the 101st distinct name (checking
    // every name first, or de-duplicating them all before the limit, reaches the bad one).
    let url = s.url(&format!("/realtime?channel={},bad%20name", names.join(",")));
    let started = Instant::now();
    let (status, body) = get(&url).await;
    let took = started.elapsed();
    assert_error(status, &body, 400, "too_many_channels", &["at most 100"]);
    // A bound no loaded machine misses, for a request that used to take 1.7 s.
    assert!(
        took < Duration::from_secs(5),
        "{} channels refused in {took:?}",
        names.len()
    );
}

/// Request heads past each size limit: a query longer than the socket path reads (48 KiB) is
/// still answered by hyper; a URI over 64 KiB is 414; a head over hyper's buffer (~400 KiB) is
/// 431; more than 100 headers are 431; a 70 KB header value on a stream is served.
#[tokio::test]
async fn oversize_request_heads_are_414_or_431() {
    let s = memory(|c| c).await;
    let query = |n: usize| {
        format!(
            "GET /realtime?channel=a&x={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "y".repeat(n)
        )
    };
    let raw = exchange_closed(s.addr, query(50_000).as_bytes()).await;
    assert_error(
        raw.status(),
        &raw.json(),
        400,
        "invalid_query",
        &["\"x\"", "allowed are"],
    );
    let raw = exchange_closed(s.addr, query(70_000).as_bytes()).await;
    assert_eq!(raw.status(), 414, "{}", raw.head());
    let raw = exchange_closed(s.addr, query(1_000_000).as_bytes()).await;
    assert_eq!(raw.status(), 431, "{}", raw.head());

    let big_header = |n: usize| {
        format!(
            "GET /realtime?channel=a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "y".repeat(n)
        )
    };
    let raw = exchange(
        s.addr,
        big_header(70_000).as_bytes(),
        WAIT_READY,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw.status(), 200, "{}", raw.head());
    let raw = exchange_closed(s.addr, big_header(1_000_000).as_bytes()).await;
    assert_eq!(raw.status(), 431, "{}", raw.head());

    let headers = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
    let raw = exchange(
        s.addr,
        format!(
            "GET /realtime?channel=a HTTP/1.1\r\nHost: x\r\n{}\r\n",
            headers(60)
        )
        .as_bytes(),
        WAIT_READY,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw.status(), 200, "60 headers: {}", raw.head());
    let raw = exchange_closed(
        s.addr,
        format!(
            "GET /realtime?channel=a HTTP/1.1\r\nHost: x\r\n{}\r\n",
            headers(101)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw.status(), 431, "101 headers: {}", raw.head());
    assert_serving(&s).await;
}

// ---------------------------------------------------------------------------------------------
// Injection into SSE frames.
// ---------------------------------------------------------------------------------------------

/// CR, LF, NUL, tab and line separators in `channel`, `events`, `cursor`, parameter names and
/// history parameters: 400 with the right code, the offending text quoted escaped, and no stream
/// opened.
#[tokio::test]
async fn control_characters_in_query_parameters_are_400_and_quoted_escaped() {
    let s = memory(|c| c).await;
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "/realtime?channel=room:1%0D%0Aid:%20x",
            "invalid_channel",
            &["'\\r'", "allowed are"],
        ),
        (
            "/realtime?channel=room:1%0Aevent:%20x",
            "invalid_channel",
            &["'\\n'"],
        ),
        ("/realtime?channel=room:1%00", "invalid_channel", &["'\\0'"]),
        ("/realtime?channel=room:1%09", "invalid_channel", &["'\\t'"]),
        (
            "/realtime?channel=room:1%E2%80%A8",
            "invalid_channel",
            &["allowed are"],
        ),
        (
            "/realtime?channel=room:1&events=chat.message%0Aevent:%20x",
            "unknown_event",
            &["chat.message\\nevent: x", "known events"],
        ),
        (
            "/realtime?channel=room:1&events=chat.message%0D%0A",
            "unknown_event",
            &["known events"],
        ),
        (
            "/realtime?channel=room:1&x%0D%0Aevent:%20y=1",
            "invalid_query",
            &["allowed are"],
        ),
        (
            "/realtime?channel=room:1&cursor=room:1%3D1-0%00",
            "invalid_cursor",
            &["stream id"],
        ),
        (
            "/realtime?channel=room:1&cursor=room:1%3D1-0%0D",
            "invalid_cursor",
            &["stream id"],
        ),
        (
            "/realtime?channel=room:1&cursor=room:1%0A%3D1-0",
            "invalid_cursor",
            &["allowed are"],
        ),
        (
            "/history?channel=room:1%0D%0A",
            "invalid_channel",
            &["allowed are"],
        ),
        (
            "/history?channel=room:1&after=1-0%0Adata:%20x",
            "invalid_id",
            &["after"],
        ),
        ("/history?channel=room:1&limit=5%0A", "invalid_limit", &["limit"]),
    ];
    for (path, code, mentions) in cases {
        let (status, body) = get(&s.url(path)).await;
        assert_error(status, &body, 400, code, mentions);
        assert_message_escaped(&body);
    }
    wait_for_subscribers(&s, 0).await;
}

/// `Last-Event-ID` bytes reqwest would not send, over a raw socket: control bytes and DEL are
/// refused by the HTTP parser (400); bytes above 0x7f and a tab reach tidings and are 400
/// `invalid_cursor`; a bare LF ends the header line, so what follows is another header and never
/// part of the cursor.
#[tokio::test]
async fn last_event_id_with_control_or_non_ascii_bytes_is_400() {
    let s = memory(|c| c).await;
    let request = |value: &[u8]| -> Vec<u8> {
        let mut r = b"GET /realtime?channel=sec:a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: ".to_vec();
        r.extend_from_slice(value);
        r.extend_from_slice(b"\r\n\r\n");
        r
    };
    for value in [
        &b"sec:a=1-0\x01"[..],
        b"sec:a=1-0\x00x",
        b"sec:a=1-0\x7f",
        b"sec:a=1-0\rid: x",
        b"sec:a=1-0\x1b[2J",
    ] {
        let raw = exchange_closed(s.addr, &request(value)).await;
        assert_eq!(
            raw.status(),
            400,
            "{:?}: {}",
            String::from_utf8_lossy(value),
            raw.text()
        );
    }
    for (value, mentions) in [
        (&b"sec:a=1-0\xff"[..], &["ASCII"][..]),
        (b"sec:a=1-0\xc3\xa9", &["ASCII"]),
        (b"sec:a=1-0\tevent: x", &["stream id"]),
    ] {
        let raw = exchange_closed(s.addr, &request(value)).await;
        assert_error(raw.status(), &raw.json(), 400, "invalid_cursor", mentions);
        assert_message_escaped(&raw.json());
    }
    let raw = exchange(
        s.addr,
        &request(b"sec:a=1-0\nid: x"),
        WAIT_READY,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw.status(), 200, "{}", raw.text());
    let text = raw.text();
    assert!(text.contains("id: sec:a=1-0\nevent: tidings.ready\n"), "{text}");
    assert!(!text.contains("id: x"), "{text}");
    assert_serving(&s).await;
}

/// An event name with a newline, CR or an SSE field in it, on emit: 422 `unknown_event`, quoted
/// escaped; nothing is stored.
#[tokio::test]
async fn event_names_with_newlines_on_emit_are_422() {
    let s = memory(|c| c).await;
    for event in [
        "chat.message\nevent: x",
        "chat.message\r\ndata: {}",
        "chat.message\n\n",
        "\nchat.message",
        "chat.message\u{0}",
        &"x".repeat(10_000),
    ] {
        let (status, body) = s.emit("sec:a", event, msg("hi")).await;
        assert_error(
            status,
            &body,
            422,
            "unknown_event",
            &["known events", "chat.message"],
        );
        assert_message_escaped(&body);
    }
    assert!(history(&s, "sec:a").await.is_empty());
    assert_serving(&s).await;
}

/// A cursor naming a channel the connection does not subscribe to (as `?cursor=` and as
/// `Last-Event-ID`): the stream opens, replays only the subscribed channel after its position,
/// and neither that channel's name nor its events ever appear on the stream.
#[tokio::test]
async fn a_cursor_for_a_channel_not_subscribed_is_ignored_and_never_echoed() {
    let s = memory(|c| c).await;
    let a1 = s.emit_ok("sec:a", "chat.message", msg("a1")).await;
    s.emit_ok("sec:b", "chat.message", msg("b1")).await;
    let a2 = s.emit_ok("sec:a", "chat.message", msg("a2")).await;
    s.emit_ok("sec:b", "chat.message", msg("b2")).await;
    let cursor = format!("sec:b=123-0,sec:a={a1}");
    let by_query = format!("/realtime?channel=sec:a&cursor={}", cursor.replace('=', "%3D"));
    // Every sec:a event after a1, as the replay must send them.
    let mut after_a1 = vec![a2];
    for (path, header) in [
        (by_query, None),
        ("/realtime?channel=sec:a".to_string(), Some(cursor.as_str())),
    ] {
        let mut sse = SseReader::open(&s.url(&path), header).await;
        let frames = sse.until("tidings.ready").await;
        let events: Vec<&Frame> = frames
            .iter()
            .filter(|f| f.event.as_deref() == Some("chat.message"))
            .collect();
        let ids: Vec<String> = events
            .iter()
            .map(|f| f.json()["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, after_a1, "{frames:?}");
        for f in &events {
            assert_eq!(
                f.id.as_deref().map(by_id),
                Some(format!("sec:a={}", f.json()["id"].as_str().unwrap())),
                "{f:?}"
            );
        }
        let last = after_a1.last().unwrap();
        assert_eq!(
            frames.last().unwrap().id.as_deref().map(by_id),
            Some(format!("sec:a={last}"))
        );
        s.emit_ok("sec:b", "chat.message", msg("b")).await;
        let next_a = s.emit_ok("sec:a", "chat.message", msg("a")).await;
        assert_eq!(
            sse.next().await.unwrap().json()["id"],
            next_a,
            "sec:b is not delivered"
        );
        assert!(!sse.raw.contains("sec:b"), "{}", sse.raw);
        after_a1.push(next_a);
    }
    assert_serving(&s).await;
}

// ---------------------------------------------------------------------------------------------
// HTTP-level oddities.
// ---------------------------------------------------------------------------------------------

/// Conflicting framing (request smuggling), old and foreign protocol versions, bytes that are not
/// HTTP or not UTF-8, odd methods and targets: each gets a 4xx or is served sanely, a request
/// smuggled in a body is never run, and the server keeps serving with no stream left behind.
#[tokio::test]
async fn http_oddities_get_a_4xx_or_are_served_sanely() {
    // Short heartbeats: a stream whose client left is noticed at the next write at the latest.
    let s = memory(|c| c.heartbeat(Duration::from_millis(200))).await;
    let a = s.addr;

    // Content-Length and Transfer-Encoding together: the chunked body wins, the connection is
    // closed after the answer, and the request hidden after the empty chunk is never answered.
    let smuggle = b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\
        Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
    let raw = exchange_closed(a, smuggle).await;
    assert_eq!((raw.status(), raw.responses()), (200, 1), "{}", raw.text());
    assert!(raw.head().contains("connection: close"), "{}", raw.head());
    assert!(!raw.text().contains("not_found"));

    let smuggled_emit = r#"{"channel":"sec:odd","event":"notification.alert","data":"smuggled"}"#;
    let request = format!(
        "POST /emit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {EMIT_KEY}\r\nContent-Length: 4\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST /emit HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {EMIT_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{smuggled_emit}",
        smuggled_emit.len()
    );
    let raw = exchange_closed(a, request.as_bytes()).await;
    assert_eq!(raw.responses(), 1, "{}", raw.text());
    assert_error(raw.status(), &raw.json(), 400, "invalid_json", &["EOF"]);

    let raw = exchange(
        a,
        b"GET /realtime?channel=sec:odd HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        WAIT_READY,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw.status(), 200, "{}", raw.text());
    assert!(raw.head().contains("connection: close"), "{}", raw.head());

    let raw = exchange_closed(
        a,
        b"POST /emit HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    )
    .await;
    assert_eq!(raw.status(), 400, "two lengths: {}", raw.text());
    let raw = exchange_closed(
        a,
        b"POST /emit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(raw.status(), 400, "unknown coding: {}", raw.text());

    // HTTP/1.0: served by hyper, with no chunked framing (the stream ends with the connection).
    let raw = exchange(
        a,
        b"GET /realtime?channel=sec:odd HTTP/1.0\r\n\r\n",
        WAIT_READY,
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.text().starts_with("HTTP/1.0 200"), "{}", raw.text());
    assert!(raw.head().contains("content-type: text/event-stream"));
    assert!(!raw.head().contains("transfer-encoding"), "{}", raw.head());
    assert!(raw.text().contains("\r\n\r\nretry: 2000\n\n"), "{}", raw.text());

    for (label, bytes) in [
        ("HTTP/0.9", &b"GET /realtime?channel=sec:odd\r\n\r\n"[..]),
        ("garbage", b"\x00\x01\x02garbage\r\n\r\n"),
        (
            "non-UTF-8 query",
            b"GET /realtime?channel=\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "non-UTF-8 history query",
            b"GET /history?channel=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "space in the target",
            b"GET /realtime?channel=a b HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "CR in a header value",
            b"GET /realtime?channel=a HTTP/1.1\r\nHost: x\r\nOrigin: a\rb\r\n\r\n",
        ),
    ] {
        let raw = exchange_closed(a, bytes).await;
        assert_eq!(raw.status(), 400, "{label}: {}", raw.text());
    }

    // The HTTP/2 preface on an HTTP/1 server: closed, nothing served.
    let raw = exchange_closed(a, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(raw.bytes.is_empty() || raw.status() == 400, "{}", raw.text());

    // A percent-encoded byte that is not UTF-8 decodes to U+FFFD, which no channel allows.
    let raw = exchange_closed(a, b"GET /realtime?channel=%FF HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_error(
        raw.status(),
        &raw.json(),
        400,
        "invalid_channel",
        &["allowed are"],
    );

    // Methods are case-sensitive: "get" is another method.
    let raw = exchange_closed(
        a,
        b"get /realtime?channel=a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_error(
        raw.status(),
        &raw.json(),
        405,
        "method_not_allowed",
        &["get", "GET /realtime"],
    );
    let raw = exchange_closed(
        a,
        b"GET /../realtime?channel=a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_error(raw.status(), &raw.json(), 404, "not_found", &["GET /realtime"]);

    // Served as a plain stream: an Upgrade, an Expect, an absolute-form target, no Host.
    for (label, bytes) in [
        (
            "upgrade",
            &b"GET /realtime?channel=sec:odd HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"[..],
        ),
        (
            "expect",
            b"GET /realtime?channel=sec:odd HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
        ),
        (
            "absolute-form",
            b"GET http://elsewhere.example/realtime?channel=sec:odd HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        ("no host", b"GET /realtime?channel=sec:odd HTTP/1.1\r\n\r\n"),
        (
            "bare LF line ends",
            b"GET /realtime?channel=sec:odd HTTP/1.1\nHost: x\n\n",
        ),
    ] {
        let raw = exchange(a, bytes, WAIT_READY, Duration::from_secs(5)).await;
        assert_eq!(raw.status(), 200, "{label}: {}", raw.text());
        assert!(raw.head().contains("text/event-stream"), "{label}");
    }

    // HEAD: the stream's head, no body, and the subscription is released.
    let raw = exchange(
        a,
        b"HEAD /realtime?channel=sec:odd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        None,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw.status(), 200, "{}", raw.text());
    assert!(raw.text().ends_with("\r\n\r\n"), "no body: {}", raw.text());

    wait_for_subscribers(&s, 0).await;
    assert!(
        history(&s, "sec:odd").await.is_empty(),
        "the smuggled emit never ran"
    );
}

/// Paths that try to climb out of `--app-dir` (dot segments, encoded, doubled, backslashes):
/// nothing outside the directory is ever served.
#[tokio::test]
async fn paths_that_climb_out_of_the_app_dir_get_nothing_outside_it() {
    let root = tempfile::tempdir().unwrap();
    let app = root.path().join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(app.join("index.html"), "<!doctype html><p>the app</p>").unwrap();
    std::fs::write(root.path().join("secret.txt"), "TOP-SECRET").unwrap();
    let s = memory(|c| c.app_dir(&app)).await;
    for target in [
        "/app/../secret.txt",
        "/app/..%2fsecret.txt",
        "/app/%2e%2e/secret.txt",
        "/app/%2e%2e%2fsecret.txt",
        "/app/%252e%252e/secret.txt",
        "/app/..%5csecret.txt",
        "/app/....//secret.txt",
        "/app//../secret.txt",
        "/app/x/../../secret.txt",
        "/app/..;/secret.txt",
    ] {
        let raw = exchange_closed(
            s.addr,
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        let text = raw.text();
        assert!(!text.contains("TOP-SECRET"), "{target}: {text}");
        match raw.status() {
            200 => assert!(text.contains("<p>the app</p>"), "{target}: {text}"),
            400 | 404 => {}
            other => panic!("{target}: {other}: {text}"),
        }
    }
    assert_serving(&s).await;
}

// ---------------------------------------------------------------------------------------------
// Emit bodies and numbers.
// ---------------------------------------------------------------------------------------------

/// Bodies that parse oddly: the content type is not checked (the body must be JSON either way,
/// and a cross-site form cannot send the Authorization header); duplicate keys at the top level
/// are 400, inside `data` the last one wins and what was validated is what is stored; deep
/// nesting, numbers out of range, a BOM, a lone surrogate and trailing data are 400; NUL inside a
/// string is data like any other. Only the accepted emits are stored, exactly.
#[tokio::test]
async fn emit_bodies_that_parse_oddly() {
    let s = memory(|c| c).await;
    let body =
        |event: &str, data: &str| format!(r#"{{"channel":"sec:odd","event":"{event}","data":{data}}}"#);

    let (status, plain) = post_emit_raw(
        &s,
        Some(&key()),
        "text/plain",
        body("notification.alert", r#""as text/plain""#),
    )
    .await;
    assert_eq!(status, 200, "{plain}");
    let (status, dup_inner) = emit_raw(
        &s,
        body("chat.message", r#"{"text":"first","text":"second","user":"ada"}"#),
    )
    .await;
    assert_eq!(status, 200, "{dup_inner}");
    let (status, nul) = emit_raw(&s, body("notification.alert", r#""a\u0000b""#)).await;
    assert_eq!(status, 200, "{nul}");

    let (status, resp) = post_emit_raw(
        &s,
        Some(&key()),
        "application/x-www-form-urlencoded",
        "channel=sec:odd&event=notification.alert&data=hi",
    )
    .await;
    assert_error(status, &resp, 400, "invalid_json", &["expected"]);

    let refused: Vec<(String, &str, u16, &str, Vec<&str>)> = vec![
        (
            r#"{"channel":"sec:odd","channel":"other","event":"notification.alert","data":"x"}"#.into(),
            "duplicate top-level key",
            400,
            "invalid_json",
            vec!["duplicate field `channel`"],
        ),
        (
            body("notification.alert", &"[".repeat(10_000)),
            "10,000 [",
            400,
            "invalid_json",
            vec!["recursion limit"],
        ),
        (
            body(
                "notification.alert",
                &format!("{}{}", "[".repeat(100), "]".repeat(100)),
            ),
            "100 nested arrays",
            422,
            "invalid_payload",
            vec!["string"],
        ),
        (
            body("notification.alert", "1e400"),
            "1e400",
            400,
            "invalid_json",
            vec!["number out of range"],
        ),
        (
            body("notification.alert", "18446744073709551616"),
            "2^64",
            422,
            "invalid_payload",
            vec!["string"],
        ),
        (
            body("notification.alert", "-0"),
            "-0",
            422,
            "invalid_payload",
            vec!["string"],
        ),
        (
            format!("\u{feff}{}", body("notification.alert", r#""bom""#)),
            "byte order mark",
            400,
            "invalid_json",
            vec!["expected value"],
        ),
        (
            body("notification.alert", r#""\ud800""#),
            "lone surrogate",
            400,
            "invalid_json",
            vec!["escape"],
        ),
        (
            format!("{} {{}}", body("notification.alert", r#""x""#)),
            "trailing data",
            400,
            "invalid_json",
            vec!["trailing characters"],
        ),
        (
            r#"{"channel":"sec:odd","event":5,"data":"x"}"#.into(),
            "event as a number",
            400,
            "invalid_json",
            vec!["expected a string"],
        ),
        (
            r#"{"channel":null,"event":"notification.alert","data":"x"}"#.into(),
            "channel null",
            400,
            "invalid_json",
            vec!["expected a string"],
        ),
    ];
    for (text, label, want, code, mentions) in refused {
        let (status, resp) = emit_raw(&s, text).await;
        assert_eq!(status, want, "{label}: {resp}");
        assert_error(status, &resp, want, code, &mentions);
    }
    let (status, resp) = emit_raw(&s, vec![0xffu8, 0xfe, 0x00]).await;
    assert_error(status, &resp, 400, "invalid_json", &["expected value"]);

    let expected = vec![
        json!({ "id": plain["id"], "channel": "sec:odd", "event": "notification.alert", "data": "as text/plain" }),
        json!({ "id": dup_inner["id"], "channel": "sec:odd", "event": "chat.message",
                "data": { "text": "second", "user": "ada" } }),
        json!({ "id": nul["id"], "channel": "sec:odd", "event": "notification.alert", "data": "a\u{0}b" }),
    ];
    assert_eq!(history(&s, "sec:odd").await, expected);
    let mut sse = SseReader::open(&s.url("/realtime?channel=sec:odd"), Some("sec:odd=0-0")).await;
    let frames = sse.until("tidings.ready").await;
    let replayed: Vec<Value> = frames[1..frames.len() - 1].iter().map(Frame::json).collect();
    assert_eq!(replayed, expected);
    assert_serving(&s).await;
}

/// Numbers out of range in `limit`, `after`, `before` and cursors: 400 naming the parameter (a
/// huge `limit` is not capped: it is not a number the server reads); the largest id is valid and
/// simply past the end.
#[tokio::test]
async fn numbers_out_of_range_in_history_and_cursors() {
    let s = memory(|c| c).await;
    let id = s.emit_ok("sec:n", "chat.message", msg("one")).await;
    let max = "18446744073709551615-18446744073709551615";
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "/history?channel=sec:n&limit=99999999999999999999999",
            "invalid_limit",
            &["limit", "1000"],
        ),
        ("/history?channel=sec:n&limit=-5", "invalid_limit", &["limit"]),
        (
            "/history?channel=sec:n&after=-1-0",
            "invalid_id",
            &["after", "-1-0"],
        ),
        (
            "/history?channel=sec:n&after=18446744073709551616-0",
            "invalid_id",
            &["after", "18446744073709551616-0"],
        ),
        (
            "/history?channel=sec:n&before=0-18446744073709551616",
            "invalid_id",
            &["before"],
        ),
        ("/history?channel=sec:n&after=1e3-0", "invalid_id", &["after"]),
        (
            "/realtime?channel=sec:n&cursor=sec:n%3D-1-0",
            "invalid_cursor",
            &["-1-0"],
        ),
        (
            "/realtime?channel=sec:n&cursor=sec:n%3D18446744073709551616-0",
            "invalid_cursor",
            &["18446744073709551616-0"],
        ),
        (
            "/realtime?channel=sec:n&cursor=sec:n%3D0x10-0",
            "invalid_cursor",
            &["0x10-0"],
        ),
    ];
    for (path, code, mentions) in cases {
        let (status, body) = get(&s.url(path)).await;
        assert_error(status, &body, 400, code, mentions);
    }
    let (status, body) = get(&s.url("/history?channel=sec:n&limit=1000000")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entries"][0]["id"], id);
    let (status, body) = get(&s.url(&format!("/history?channel=sec:n&after={max}"))).await;
    assert_eq!((status, body["entries"].clone()), (200, json!([])));
    let mut sse = SseReader::open(
        &s.url(&format!("/realtime?channel=sec:n&cursor=sec:n%3D{max}")),
        None,
    )
    .await;
    let frames = sse.until("tidings.ready").await;
    assert!(frames.iter().all(|f| f.event.as_deref() != Some("chat.message")));
    assert_serving(&s).await;
}

// ---------------------------------------------------------------------------------------------
// JWT.
// ---------------------------------------------------------------------------------------------

/// Tokens in several places: the first found (Authorization, then the cookie, then `?token=`) is
/// the only one checked, so a bad one there is refused even when a later one is good, and a
/// good one there decides the identity whatever a later one says.
#[tokio::test]
async fn with_tokens_in_several_places_only_the_first_found_counts() {
    let s = memory(jwt_private).await;
    let url = |extra: &str| s.url(&format!("/realtime?channel=user:bob{extra}"));
    let good = |sub: &str| hs256(json!({ "sub": sub, "exp": unix_now() + 600, "subscribe": ["user:{sub}"] }));
    let expired = hs256(json!({ "sub": "bob", "exp": unix_now() - 5, "subscribe": ["user:{sub}"] }));
    let (ada, bob) = (good("ada"), good("bob"));

    let cookie = |t: &str| format!("tidings_token={t}");
    let (status, body) = get_with(
        &url(&format!("&token={bob}")),
        &[("cookie", cookie(&expired).as_bytes())],
    )
    .await;
    assert_error(status, &body, 401, "unauthenticated", &["token expired"]);
    let (status, body) = get_with(
        &url(&format!("&token={bob}")),
        &[("cookie", cookie(&ada).as_bytes())],
    )
    .await;
    assert_error(status, &body, 403, "forbidden", &["user:bob"]);
    let (status, body) = get_with(
        &url(""),
        &[
            ("authorization", b"Bearer not-a-token"),
            ("cookie", cookie(&bob).as_bytes()),
        ],
    )
    .await;
    assert_error(status, &body, 401, "unauthenticated", &["invalid token"]);
    // Two cookies of the same name: the first.
    let both = format!("tidings_token={expired}; tidings_token={bob}");
    let (status, body) = get_with(&url(""), &[("cookie", both.as_bytes())]).await;
    assert_error(status, &body, 401, "unauthenticated", &["token expired"]);
    // A token with CR/LF in the query.
    let (status, body) = get(&url("&token=a.b.c%0D%0Aevent:%20x")).await;
    assert_error(status, &body, 401, "unauthenticated", &["invalid token"]);
    assert_message_escaped(&body);
    // The good one alone.
    let (status, _) = get_with(&url(""), &[("cookie", cookie(&bob).as_bytes())]).await;
    assert_eq!(status, 200);
    assert_serving(&s).await;
}

/// A `sub` that looks like part of another channel name (`ada:x`, `*`, empty) reaches only the
/// private channel that is exactly its own.
#[tokio::test]
async fn a_sub_that_looks_like_another_channel_reaches_only_its_own() {
    let s = memory(jwt_private).await;
    let token = |sub: &str| {
        hs256(json!({ "sub": sub, "exp": unix_now() + 600, "subscribe": ["user:{sub}", "user:{sub}:*"] }))
    };
    let cases: &[(&str, &str, u16)] = &[
        ("ada:x", "user:ada", 403),
        ("ada:x", "user:ada:x", 200),
        ("ada", "user:ada:x", 403),
        ("*", "user:ada", 403),
        ("ada*", "user:ada", 403),
        ("", "user:", 403),
        ("user:ada", "user:ada", 403),
    ];
    for (sub, channel, want) in cases {
        let bearer = format!("Bearer {}", token(sub));
        let (status, body) = get_with(
            &s.url(&format!("/realtime?channel={channel}")),
            &[("authorization", bearer.as_bytes())],
        )
        .await;
        assert_eq!(status, *want, "sub {sub:?} on {channel}: {body}");
        if *want == 403 {
            assert_eq!(body["error"], "forbidden", "{body}");
        }
    }
    assert_serving(&s).await;
}

/// Without a private-channel rule, a `sub` ending in `*` must not turn `inbox:{sub}` into a
/// prefix pattern: `{sub}` is the token's subject, literally.
#[tokio::test]
async fn a_sub_ending_in_a_star_is_not_a_wildcard() {
    let s = memory(jwt).await;
    for sub in ["*", "b*"] {
        let t = hs256(json!({ "sub": sub, "exp": unix_now() + 600,
                              "subscribe": ["inbox:{sub}"], "publish": ["inbox:{sub}"] }));
        let bearer = format!("Bearer {t}");
        for path in ["/realtime?channel=inbox:bob", "/history?channel=inbox:bob"] {
            let (status, body) = get_with(&s.url(path), &[("authorization", bearer.as_bytes())]).await;
            assert_error(status, &body, 403, "forbidden", &["inbox:bob"]);
        }
        let (status, body) = post_emit_raw(
            &s,
            Some(&bearer),
            "application/json",
            r#"{"channel":"inbox:bob","event":"notification.alert","data":"x"}"#,
        )
        .await;
        assert_error(status, &body, 403, "forbidden", &["inbox:bob"]);
    }
    // Nothing was stored on bob's inbox (read from the store: the HTTP read needs a token).
    let stored =
        s.rt.channel("inbox:bob")
            .history(tidings::store::Range::Latest, 10)
            .await
            .unwrap();
    assert!(stored.is_empty(), "{stored:?}");
}

/// A validly signed token whose `exp` is past what the clock can represent (2^64 - 1 seconds)
/// never expires (SECURITY.md): accepted everywhere, and its stream opens.
#[tokio::test]
async fn a_token_with_an_exp_out_of_range_never_expires() {
    let s = memory(jwt).await;
    let t = hs256(json!({ "sub": "ada", "exp": u64::MAX, "subscribe": ["room:*"], "publish": ["room:*"] }));
    let bearer = format!("Bearer {t}");
    let (status, body) = get_with(
        &s.url("/history?channel=room:1"),
        &[("authorization", bearer.as_bytes())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_emit_raw(
        &s,
        Some(&bearer),
        "application/json",
        r#"{"channel":"room:1","event":"notification.alert","data":"x"}"#,
    )
    .await;
    assert_eq!(status, 200, "emit: {body}");
    let mut sse = SseReader::open(
        &s.url(&format!("/realtime?channel=room:1&cursor=room:1=0-0&token={t}")),
        None,
    )
    .await;
    let frames = sse.until("tidings.ready").await;
    let alerts: Vec<_> = frames
        .iter()
        .filter(|f| f.event.as_deref() == Some("notification.alert"))
        .collect();
    assert_eq!(alerts.len(), 1, "the stream opens and replays: {frames:?}");
    assert_serving(&s).await;
}

// ---------------------------------------------------------------------------------------------
// After all of them.
// ---------------------------------------------------------------------------------------------

/// Events whose strings look like SSE, HTTP and JSON syntax, to be stored and replayed unaltered.
fn accepted_events() -> Vec<(&'static str, Value)> {
    vec![
        ("chat.message", msg("first")),
        (
            "chat.message",
            json!({ "text": "\n\nevent: tidings.reset\ndata: {}\n\n", "user": "ada" }),
        ),
        (
            "notification.alert",
            json!("line\r\nid: sec:log=0-0\r\n\r\nretry: 1"),
        ),
        (
            "chat.message",
            json!({ "text": "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", "user": "x\u{0}y" }),
        ),
        (
            "chat.typing",
            json!({ "user": "\u{2028}\u{2029}\u{85}", "active": true }),
        ),
        ("presence.status", json!({ "user": "é😀", "status": "away" })),
        (
            "chat.message",
            json!({ "text": "\"}\\\"],\"x\":1}", "user": "ada", "mentions": ["a", "b"] }),
        ),
        ("notification.alert", json!("last")),
    ]
}

/// Every kind of bad input of this file and the other suites, aimed at `sec:log`, each with its
/// exact answer.
async fn fire_bad_inputs(s: &TestServer) {
    let c = "sec:log";
    let body = |event: &str, data: &str| format!(r#"{{"channel":"{c}","event":"{event}","data":{data}}}"#);
    let emits: Vec<(String, Option<String>, u16, &str)> = vec![
        (
            format!(r#"{{"channel":"{c}","event":"chat.message","data":"#),
            Some(key()),
            400,
            "invalid_json",
        ),
        (
            body("chat.message", r#"{"text":5,"user":"ada"}"#),
            Some(key()),
            422,
            "invalid_payload",
        ),
        (body("chat.shout", r#""x""#), Some(key()), 422, "unknown_event"),
        (
            body("chat.message\\nevent: x", r#"{"text":"x","user":"ada"}"#),
            Some(key()),
            422,
            "unknown_event",
        ),
        (
            body("notification.alert", &format!("\"{}\"", "x".repeat(70_000))),
            Some(key()),
            413,
            "payload_too_large",
        ),
        (
            r#"{"channel":"sec:log\nevent: x","event":"notification.alert","data":"x"}"#.into(),
            Some(key()),
            400,
            "invalid_channel",
        ),
        (
            r#"{"channel":"sec:log,other","event":"notification.alert","data":"x"}"#.into(),
            Some(key()),
            400,
            "invalid_channel",
        ),
        (
            format!(r#"{{"channel":"{c}","channel":"other","event":"notification.alert","data":"x"}}"#),
            Some(key()),
            400,
            "invalid_json",
        ),
        (
            body("notification.alert", &"[".repeat(10_000)),
            Some(key()),
            400,
            "invalid_json",
        ),
        (
            body("notification.alert", "1e400"),
            Some(key()),
            400,
            "invalid_json",
        ),
        (
            r#"{"channel":5,"event":"notification.alert","data":"x"}"#.into(),
            Some(key()),
            400,
            "invalid_json",
        ),
        (
            format!(r#"{{"channel":"{c}","event":"notification.alert","data":"x","extra":1}}"#),
            Some(key()),
            400,
            "invalid_json",
        ),
        (body("notification.alert", r#""x""#), None, 401, "unauthorized"),
        (
            body("notification.alert", r#""x""#),
            Some("Bearer wrong".into()),
            401,
            "unauthorized",
        ),
    ];
    for (text, auth, want, code) in emits {
        let (status, resp) = post_emit_raw(s, auth.as_deref(), "application/json", text).await;
        assert_eq!((status, resp["error"].as_str()), (want, Some(code)), "{resp}");
    }

    let names: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
    let ten_thousand = format!("/realtime?channel={}", names.join(","));
    let gets: Vec<(String, Option<&[u8]>, u16, &str)> = vec![
        (
            format!("/realtime?channel={c}%0D%0Aid:%20x"),
            None,
            400,
            "invalid_channel",
        ),
        (ten_thousand, None, 400, "too_many_channels"),
        (
            format!("/realtime?channel={c}&cursor={c}%3D1-0%0D%0Aevent:%20x"),
            None,
            400,
            "invalid_cursor",
        ),
        (
            format!("/realtime?channel={c}&events=chat.message%0Aevent:x"),
            None,
            400,
            "unknown_event",
        ),
        (
            format!("/realtime?channel={c}&evil=1"),
            None,
            400,
            "invalid_query",
        ),
        (
            format!("/realtime?channel={c}"),
            Some(b"sec:log=1-0\xff".as_slice()),
            400,
            "invalid_cursor",
        ),
        (
            format!("/history?channel={c}&limit=99999999999999999999999"),
            None,
            400,
            "invalid_limit",
        ),
        (
            format!("/history?channel={c}&after=-1-0"),
            None,
            400,
            "invalid_id",
        ),
    ];
    for (path, last_event_id, want, code) in gets {
        let headers: Vec<(&str, &[u8])> = last_event_id.map(|v| ("last-event-id", v)).into_iter().collect();
        let (status, resp) = get_with(&s.url(&path), &headers).await;
        assert_eq!((status, resp["error"].as_str()), (want, Some(code)), "{resp}");
    }

    // A valid emit smuggled after a chunked body that also has a Content-Length: never run.
    let hidden = body("notification.alert", r#""smuggled""#);
    let smuggle = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n\r\nPOST /emit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {EMIT_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{hidden}",
        hidden.len()
    );
    let raw_cases: Vec<(Vec<u8>, u16)> = vec![
        (smuggle.into_bytes(), 200),
        (b"\x00\x01\x02garbage\r\n\r\n".to_vec(), 400),
        (format!("GET /realtime?channel={c}\r\n\r\n").into_bytes(), 400),
        (
            format!("GET /realtime?channel={c} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: a\x01\r\n\r\n")
                .into_bytes(),
            400,
        ),
        (
            format!(
                "GET /realtime?channel={c} HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..101).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
            )
            .into_bytes(),
            431,
        ),
        (
            format!(
                "GET /realtime?channel={c}&x={} HTTP/1.1\r\nHost: x\r\n\r\n",
                "y".repeat(70_000)
            )
            .into_bytes(),
            414,
        ),
    ];
    for (bytes, want) in raw_cases {
        let raw = exchange_closed(s.addr, &bytes).await;
        assert_eq!((raw.status(), raw.responses()), (want, 1), "{}", raw.text());
    }
    // A client that leaves halfway through its head.
    let mut gone = TcpStream::connect(s.addr).await.unwrap();
    gone.write_all(format!("GET /realtime?channel={c} HTTP/1.1\r\nHo").as_bytes())
        .await
        .unwrap();
    drop(gone);
}

/// The battery above, on one server: the events accepted before and after it are stored,
/// delivered live and replayed from `0-0` exactly as sent, in order, with nothing in between;
/// the server still answers, holds no stray subscription, and (on Redis) wrote no other key.
async fn after_every_bad_input_the_accepted_events_are_intact(b: Backend) {
    let s = start(&b, |c| c.heartbeat(Duration::from_millis(200))).await;
    let channel = "sec:log";
    let mut live = SseReader::open(&s.url(&format!("/realtime?channel={channel}")), None).await;
    live.until("tidings.ready").await;
    let events = accepted_events();
    let mut expected = Vec::new();
    for (i, (event, data)) in events.iter().enumerate() {
        if i == events.len() / 2 {
            fire_bad_inputs(&s).await;
        }
        let id = s.emit_ok(channel, event, data.clone()).await;
        expected.push(json!({ "id": id, "channel": channel, "event": event, "data": data }));
    }
    fire_bad_inputs(&s).await;

    assert_serving(&s).await;
    assert_eq!(history(&s, channel).await, expected, "history");
    for want in &expected {
        let f = live.next().await.unwrap();
        assert_eq!(f.event.as_deref(), want["event"].as_str(), "{f:?}");
        assert_eq!(&f.json(), want, "live");
    }
    let mut replay = SseReader::open(
        &s.url(&format!("/realtime?channel={channel}")),
        Some("sec:log=0-0"),
    )
    .await;
    let frames = replay.until("tidings.ready").await;
    let replayed: Vec<Value> = frames[1..frames.len() - 1].iter().map(Frame::json).collect();
    assert_eq!(replayed, expected, "replay from 0-0");
    let last = expected.last().unwrap()["id"].as_str().unwrap();
    assert_eq!(
        frames.last().unwrap().id.as_deref().map(by_id),
        Some(format!("{channel}={last}"))
    );
    drop(replay);
    wait_for_subscribers(&s, 1).await;

    if let Some(keys) = redis_keys(&b).await {
        let keys: BTreeSet<String> = keys.into_iter().filter(|k| !k.contains('#')).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["t:sec:log".to_string()]),
            "refused emits wrote nothing"
        );
    }
}
