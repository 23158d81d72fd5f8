//! Shared test support: a real `redis-server` on a random port, and tidings servers.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tidings::{Config, MemoryStore, RedisOptions, RedisStore, Registry, Retention, Store, TailMode, Tidings};

pub const EMIT_KEY: &str = "test-emit-key";

/// The HS256 secret of the JWT tests.
pub const JWT_SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

/// Seconds since the Unix epoch, for `exp` claims.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A token with `claims`, signed HS256 with [`JWT_SECRET`].
pub fn hs256(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// The test schema (`tests/events/events.json`), whose Rust types are `tidings_test_events`.
pub fn schema_path() -> PathBuf {
    PathBuf::from(tidings_test_events::SCHEMA_PATH)
}

/// The `tidings` command, built by `cargo test --workspace` (it lives in `cli/`, another package,
/// so cargo gives these tests no `CARGO_BIN_EXE_tidings`): `TIDINGS_BIN` when set, else
/// `tidings` beside the test's own target directory. Panics with what to run when it is missing
/// or older than the sources it is built from, so a test never runs an old server.
pub fn tidings_bin() -> PathBuf {
    // Looked up once per test binary: the freshness check walks the source trees.
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(find_tidings_bin).clone()
}

fn find_tidings_bin() -> PathBuf {
    if let Some(given) = std::env::var_os("TIDINGS_BIN") {
        return PathBuf::from(given);
    }
    // Tests run as <target>/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("tidings");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build -p tidings-cli` (or `cargo test --workspace`) first",
                bin.display()
            )
        });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["src", "cli/src", "codegen/src"] {
        if let Some(newer) = newer_file(&root.join(dir), built) {
            panic!(
                "{} is older than {}: run `cargo build -p tidings-cli` (or `cargo test --workspace`) first",
                bin.display(),
                newer.display()
            );
        }
    }
    bin
}

fn newer_file(dir: &Path, than: SystemTime) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let meta = entry.metadata().ok()?;
        if meta.is_dir() {
            if let Some(found) = newer_file(&path, than) {
                return Some(found);
            }
        } else if meta.modified().ok()? > than {
            return Some(path);
        }
    }
    None
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The redis-server binary: `TIDINGS_REDIS_SERVER`, else `redis-server` on PATH.
fn redis_binary() -> String {
    std::env::var("TIDINGS_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// A real redis-server in a temp dir, killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    extra: Vec<String>,
    _dir: tempfile::TempDir,
}

fn spawn_redis(port: u16, dir: &std::path::Path, extra: &[String]) -> Child {
    let mut cmd = Command::new(redis_binary());
    cmd.arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {}: {e}. Install redis-server (the test command does: apt-get install -y redis-server) or set TIDINGS_REDIS_SERVER",
            redis_binary()
        )
    })
}

/// Waits until the server on `port` answers; false when `child` exited first or 10 s passed.
fn await_redis(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if ping(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// With more `redis-server` arguments (later ones win: `--appendonly yes` turns AOF on).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn_redis(port, dir.path(), &extra);
            if await_redis(&mut child, port) {
                return RedisServer {
                    child,
                    port,
                    extra,
                    _dir: dir,
                };
            }
            // e.g. the port was taken between our probe and its bind: try another
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    /// SIGKILL: nothing is flushed that the persistence settings did not already write.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Like [`RedisServer::restart`], but returns as soon as the server accepts connections,
    /// while it may still be loading its dataset (answering `-LOADING`).
    pub fn restart_loading(&mut self) {
        self.kill();
        self.child = spawn_redis(self.port, self._dir.path(), &self.extra);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen again");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the server again on the same port, in the same directory (so with whatever its
    /// persistence wrote), after [`RedisServer::kill`].
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            self.child = spawn_redis(self.port, self._dir.path(), &self.extra);
            if await_redis(&mut self.child, self.port) {
                return;
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not start again on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Runs a command with redis-cli-like semantics through a plain connection.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(s.read(&mut buf), Ok(n) if n >= 5 && &buf[..5] == b"+PONG")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which store a test runs on. Redis runs in the default tail mode (keyspace notifications) or,
/// as `RedisXread`, with the blocking-XREAD fallback.
pub enum Backend {
    Memory,
    Redis(RedisServer),
    RedisXread(RedisServer),
}

impl Backend {
    pub fn redis() -> Backend {
        Backend::Redis(RedisServer::start())
    }

    pub fn redis_xread() -> Backend {
        Backend::RedisXread(RedisServer::start())
    }

    /// The store kind the server reports (`/health`, `Store::kind`).
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis(_) | Backend::RedisXread(_) => "redis",
        }
    }

    /// The Redis server, on the Redis backends.
    pub fn redis_server(&self) -> Option<&RedisServer> {
        match self {
            Backend::Memory => None,
            Backend::Redis(server) | Backend::RedisXread(server) => Some(server),
        }
    }

    /// A store on this backend; on Redis, each call gets its own key prefix unless `prefix` is given.
    pub async fn store(&self, retention: Retention, prefix: &str) -> Arc<dyn Store> {
        match self {
            Backend::Memory => Arc::new(MemoryStore::new(retention)),
            Backend::Redis(server) | Backend::RedisXread(server) => {
                let mode = match self {
                    Backend::RedisXread(_) => TailMode::Xread,
                    _ => TailMode::Keyspace,
                };
                Arc::new(
                    RedisStore::connect(
                        RedisOptions::new(server.url())
                            .key_prefix(prefix)
                            .retention(retention)
                            .tail_mode(mode),
                    )
                    .await
                    .expect("connect to test redis"),
                )
            }
        }
    }

    pub fn redis_url(&self) -> Option<String> {
        self.redis_server().map(RedisServer::url)
    }
}

/// `id` in the channel's epoch now, as the server writes it in a cursor.
pub async fn pos(store: &dyn Store, channel: &tidings::Channel, id: tidings::StreamId) -> tidings::Position {
    tidings::Position::new(id, store.position(channel).await.unwrap().epoch)
}

/// Positions given by id alone (no epoch), as a store's `tail` takes them.
pub fn at(positions: &[(tidings::Channel, tidings::StreamId)]) -> Vec<(tidings::Channel, tidings::Position)> {
    positions
        .iter()
        .map(|(c, id)| (c.clone(), tidings::Position::from(*id)))
        .collect()
}

/// The keys in Redis (None on the memory backend), to check that a refusal wrote nothing.
pub async fn redis_keys(b: &Backend) -> Option<std::collections::BTreeSet<String>> {
    let server = b.redis_server()?;
    let mut conn = server.client().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    Some(keys.into_iter().collect())
}

/// A tidings server on 127.0.0.1:<random>, shut down on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub rt: Tidings,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `store` with the demo schema; `tweak` adjusts the config.
    pub async fn start(store: Arc<dyn Store>, tweak: impl FnOnce(Config) -> Config) -> TestServer {
        let config = tweak(
            Config::default()
                .schema(schema_path())
                .emit_key(EMIT_KEY)
                .heartbeat(Duration::from_secs(15)),
        );
        let registry = Registry::load(&config.schema).expect("demo schema loads");
        let rt = Tidings::new(registry, store, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let rt = rt.clone();
            async move {
                tidings::serve(listener, rt, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            }
        });
        TestServer {
            addr,
            rt,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POST /emit with the test key; returns (status, body).
    pub async fn emit(
        &self,
        channel: &str,
        event: &str,
        data: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .post(self.url("/emit"))
            .bearer_auth(EMIT_KEY)
            .json(&serde_json::json!({ "channel": channel, "event": event, "data": data }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Emits and returns the stream id, panicking on failure.
    pub async fn emit_ok(&self, channel: &str, event: &str, data: serde_json::Value) -> String {
        let (status, body) = self.emit(channel, event, data).await;
        assert_eq!(status, 200, "emit failed: {body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Stops accepting connections and ends the server task (open SSE streams are dropped).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The hyper path: `tidings::router` under `axum::serve`, on the memory store with the demo
/// schema and [`EMIT_KEY`]; `tweak` adjusts the config. Returns the base URL.
pub async fn hyper_server(tweak: impl FnOnce(Config) -> Config) -> String {
    let config = tweak(Config::default().schema(schema_path()).emit_key(EMIT_KEY));
    let registry = Registry::load(&config.schema).unwrap();
    let rt = Tidings::new(registry, Arc::new(MemoryStore::default()), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, tidings::router(rt)).await.unwrap();
    });
    format!("http://{addr}")
}

/// GET with extra headers; the status, the response headers and the JSON body (Null for a
/// stream, which is not read).
pub async fn get_json(
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut req = reqwest::Client::new().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let h = r.headers().clone();
    let is_json = h
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
    let body = if is_json {
        r.json().await.unwrap()
    } else {
        serde_json::Value::Null
    };
    (status, h, body)
}

/// POST /emit with a raw body, a content type and an optional raw Authorization header; the
/// status and the JSON body (Null when it is not JSON).
pub async fn post_emit_raw(
    s: &TestServer,
    auth: Option<&str>,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(s.url("/emit"))
        .header("content-type", content_type)
        .body(body);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// A chat.message payload.
pub fn msg(text: &str) -> serde_json::Value {
    serde_json::json!({ "text": text, "user": "ada" })
}

/// A raw SSE reader over reqwest: yields parsed frames, keeps the raw bytes for byte-exact tests.
/// Heartbeats (`tidings.ping`) are counted in `pings` and not yielded, as a client that has
/// nothing to do with them skips them.
pub struct SseReader {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    pending: String,
    pub raw: String,
    pub pings: usize,
}

/// One SSE frame (comments are skipped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<String>,
}

impl Frame {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.data.as_deref().unwrap_or("null")).unwrap()
    }
}

impl SseReader {
    /// Opens GET `url` with optional Last-Event-ID; panics unless it answers 200 text/event-stream.
    pub async fn open(url: &str, last_event_id: Option<&str>) -> SseReader {
        let mut req = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {url}: {}", r.status());
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        SseReader {
            body: Box::pin(r.bytes_stream()),
            pending: String::new(),
            raw: String::new(),
            pings: 0,
        }
    }

    /// The next frame (skipping comment-only blocks), or None when the stream ends.
    /// Panics after `timeout`.
    pub async fn next_timeout(&mut self, timeout: Duration) -> Option<Frame> {
        tokio::time::timeout(timeout, self.next_frame())
            .await
            .expect("timed out waiting for an SSE frame")
    }

    pub async fn next(&mut self) -> Option<Frame> {
        self.next_timeout(Duration::from_secs(10)).await
    }

    async fn next_frame(&mut self) -> Option<Frame> {
        use futures_util::StreamExt;
        loop {
            while let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut frame = Frame::default();
                let mut any = false;
                for line in block.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    any = true;
                    match field {
                        "id" => frame.id = Some(value.to_string()),
                        "event" => frame.event = Some(value.to_string()),
                        "data" => frame.data = Some(value.to_string()),
                        "retry" => frame.retry = Some(value.to_string()),
                        other => panic!("unexpected SSE field {other:?} in {block:?}"),
                    }
                }
                if frame.event.as_deref() == Some("tidings.ping") {
                    self.pings += 1;
                } else if any {
                    return Some(frame);
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    let text = String::from_utf8(chunk.to_vec()).expect("SSE is UTF-8");
                    self.raw.push_str(&text);
                    self.pending.push_str(&text);
                }
                _ => return None,
            }
        }
    }

    /// Reads frames until one with `event`, returning every frame read (including it).
    pub async fn until(&mut self, event: &str) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let f = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended before {event}; got {frames:?}"));
            let done = f.event.as_deref() == Some(event);
            frames.push(f);
            if done {
                return frames;
            }
        }
    }
}

/// Generates one `#[tokio::test]` per backend for each listed `async fn(Backend)`.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Memory).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::redis()).await;
                }
            )*
        }
        mod redis_xread {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::redis_xread()).await;
                }
            )*
        }
    };
}

/// Asserts a 4xx JSON error body: status, `error` code, and a message naming `mentions`.
pub fn assert_error(status: u16, body: &serde_json::Value, want_status: u16, code: &str, mentions: &[&str]) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {body}"));
    for m in mentions {
        assert!(message.contains(m), "message {message:?} should mention {m:?}");
    }
}

/// How to start the real `tidings` binary: on the memory store unless [`Spawn::redis`] is set.
/// It always gets the demo schema, [`EMIT_KEY`] and a free `127.0.0.1` port, and nothing from
/// the test's environment (`REDIS_URL`, `TIDINGS_*`).
///
/// `Spawn::new().redis(&url).args(&["--heartbeat", "1"]).start().await`
pub struct Spawn {
    redis: Option<String>,
    args: Vec<String>,
    log: &'static str,
    name: &'static str,
}

impl Spawn {
    pub fn new() -> Spawn {
        Spawn {
            redis: None,
            args: Vec::new(),
            log: "tidings=info,warn",
            name: "",
        }
    }

    /// `--redis <url>`: one URL, or comma-separated cluster seeds.
    pub fn redis(mut self, url: &str) -> Spawn {
        self.redis = Some(url.to_string());
        self
    }

    /// More command-line arguments.
    pub fn args(mut self, args: &[&str]) -> Spawn {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// The `TIDINGS_LOG` filter (default `tidings=info,warn`).
    pub fn log(mut self, filter: &'static str) -> Spawn {
        self.log = filter;
        self
    }

    /// The node's name, for messages.
    pub fn name(mut self, name: &'static str) -> Spawn {
        self.name = name;
        self
    }

    /// Starts the binary and waits until `/health` answers `ok` on the expected store (`redis` or
    /// `memory`), retrying on another port when the probed one was taken before the binary bound it.
    pub async fn start(self) -> Binary {
        let store = if self.redis.is_some() { "redis" } else { "memory" };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        for _ in 0..5 {
            let port = free_port();
            let logs = tempfile::tempdir().unwrap();
            let mut cmd = Command::new(tidings_bin());
            cmd.arg("--bind")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--schema")
                .arg(schema_path());
            if let Some(url) = &self.redis {
                cmd.arg("--redis").arg(url);
            }
            let child = cmd
                .args(&self.args)
                .env_clear()
                .env("TIDINGS_EMIT_KEY", EMIT_KEY)
                .env("TIDINGS_LOG", self.log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(logs.path().join("stderr.log")).unwrap())
                .spawn()
                .expect("start the tidings binary");
            // Killed on drop from here on, also when an assertion below fails.
            let mut bin = Binary {
                child,
                addr: format!("127.0.0.1:{port}"),
                name: self.name,
                logs,
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if bin.child.try_wait().unwrap().is_some() {
                    break; // e.g. the port was taken between probe and bind: try another
                }
                if let Ok(r) = client.get(bin.url("/health")).send().await {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    if body["status"] == "ok" {
                        assert_eq!(body["store"], store, "{body}");
                        return bin;
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            bin.kill();
            eprintln!("{}", bin.log());
        }
        panic!("the tidings binary did not become ready");
    }
}

/// A running `tidings` binary from [`Spawn`], SIGKILLed on drop; when the test is panicking,
/// its log is printed then.
pub struct Binary {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    pub name: &'static str,
    /// Holds `stderr.log`.
    logs: tempfile::TempDir,
}

impl Binary {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `/realtime?channel=<c>&...`.
    pub fn realtime(&self, channels: &[impl AsRef<str>]) -> String {
        let q: Vec<String> = channels
            .iter()
            .map(|c| format!("channel={}", c.as_ref()))
            .collect();
        self.url(&format!("/realtime?{}", q.join("&")))
    }

    pub async fn health(&self) -> serde_json::Value {
        reqwest::get(self.url("/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the binary wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr.log")).unwrap_or_default()
    }

    /// SIGKILL: no graceful shutdown, no chance to flush anything. Waits for the process to end.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the tidings binary");
        self.child.wait().expect("wait for the tidings binary");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            match self.name {
                "" => eprintln!("--- tidings node log ---\n{}", self.log()),
                name => eprintln!("--- log of node {name} ---\n{}", self.log()),
            }
        }
    }
}

/// One delivered or emitted event: channel, id, text (empty for payloads without one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ev {
    pub channel: String,
    pub id: tidings::StreamId,
    pub text: String,
}

/// A cursor with its epochs taken out (`room:a=5-0@5f3a09c1` → `room:a=5-0`), to compare
/// positions with ids; panics when a position past `0-0` names no epoch, which a cursor the
/// server writes for a channel that has a stream always does.
pub fn by_id(cursor: &str) -> String {
    cursor
        .split(',')
        .map(|part| match part.split_once('@') {
            Some((head, epoch)) => {
                assert!(
                    epoch.len() == 8 && epoch.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{cursor}"
                );
                head.to_string()
            }
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The event of an SSE frame, checking that the frame's `id:` cursor holds the event's id for
/// its channel.
pub fn ev(frame: &Frame) -> Ev {
    let data = frame.json();
    let ev = Ev {
        channel: data["channel"].as_str().unwrap().to_string(),
        id: data["id"].as_str().unwrap().parse().unwrap(),
        text: data["data"]["text"].as_str().unwrap_or_default().to_string(),
    };
    let cursor = tidings::Cursor::parse(frame.id.as_deref().unwrap()).unwrap();
    assert_eq!(
        cursor
            .get(&tidings::Channel::new(&ev.channel).unwrap())
            .map(|p| p.id),
        Some(ev.id),
        "{frame:?}"
    );
    ev
}

/// The clients of `redis` other than this test's own probes (each probe names itself `probe`
/// first, and is closed before this returns): one `CLIENT LIST` line each.
pub fn other_clients(redis: &RedisServer, probe: &str) -> Vec<String> {
    let mut conn = redis.client().get_connection().expect("probe connection");
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(probe)
        .query::<()>(&mut conn)
        .unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    let mine = format!("name={probe}");
    list.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.split(' ').any(|field| field == mine))
        .map(str::to_owned)
        .collect()
}

/// A WebSocket client on `GET /ws`, over tokio-tungstenite (a client we did not write): sends
/// JSON messages and reads JSON frames. Heartbeat `ping` frames are counted and skipped.
pub struct WsClient {
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    pub pings: usize,
    /// The close frame's code and reason, once the server closed.
    pub closed: Option<(u16, String)>,
}

impl WsClient {
    /// Connects to `base` (`http://host:port`, as [`TestServer::url`] or [`Binary::url`] give
    /// it) at `/ws` plus `query`; panics when the upgrade is refused.
    pub async fn connect(base: &str, query: &str) -> WsClient {
        match WsClient::try_connect(base, query, &[]).await {
            Ok(c) => c,
            Err((status, body)) => panic!("GET /ws{query} refused: {status} {body}"),
        }
    }

    /// Connects with extra request headers; an upgrade refused over HTTP gives its status and
    /// JSON body.
    pub async fn try_connect(
        base: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, (u16, serde_json::Value)> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}/ws{query}", base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().unwrap();
        for (k, v) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(WsClient {
                ws,
                pings: 0,
                closed: None,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(serde_json::Value::Null);
                Err((status, body))
            }
            Err(e) => panic!("connecting to /ws: {e}"),
        }
    }

    /// Sends `value` as a JSON text message.
    pub async fn send(&mut self, value: serde_json::Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .expect("send on the WebSocket");
    }

    /// The next frame that is not a heartbeat `ping`, or `None` once the server closed (its
    /// code and reason are then in `closed`). Panics after 10 s.
    pub async fn next(&mut self) -> Option<serde_json::Value> {
        self.next_timeout(Duration::from_secs(10)).await
    }

    pub async fn next_timeout(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        tokio::time::timeout(timeout, self.next_frame())
            .await
            .expect("timed out waiting for a WebSocket frame")
    }

    async fn next_frame(&mut self) -> Option<serde_json::Value> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let v: serde_json::Value = serde_json::from_str(&text).expect("frames are JSON");
                    if v["type"] == "ping" {
                        self.pings += 1;
                        continue;
                    }
                    return Some(v);
                }
                Some(Ok(Message::Close(frame))) => {
                    self.closed =
                        Some(frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string())));
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Reads frames until one of `type`, returning every frame read (including it).
    pub async fn until(&mut self, kind: &str) -> Vec<serde_json::Value> {
        let mut frames = Vec::new();
        loop {
            let f = self
                .next()
                .await
                .unwrap_or_else(|| panic!("closed ({:?}) before {kind}; got {frames:?}", self.closed));
            let done = f["type"] == kind;
            frames.push(f);
            if done {
                return frames;
            }
        }
    }
}
