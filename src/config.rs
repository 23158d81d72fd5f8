//! Settings of a tidings server, with the defaults the binary uses.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authorizer;
use crate::store::{Retention, TailMode};

/// Limits on what one request, one client or one publisher may ask for. Every refusal is a JSON
/// 4xx/503 naming the limit and its value (`"limit": 100`); SECURITY.md lists them all.
///
/// ```
/// use std::num::NonZeroU32;
/// let mut limits = tidings::Limits::default();
/// limits.max_connections_per_identity = 8;
/// limits.emits_per_second = NonZeroU32::new(20);
/// assert!(limits.check().is_ok());
/// limits.max_channels = 1_000; // cursors for 1,000 channels would not fit MAX_CURSOR_LEN
/// assert!(limits.check().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Channels one SSE connection may watch (400 `too_many_channels` beyond). Default 100.
    pub max_channels: usize,
    /// Characters in a channel name (400 `invalid_channel` beyond). Default 128, at most
    /// [`MAX_CHANNEL_LEN`](crate::MAX_CHANNEL_LEN) (256).
    pub max_channel_len: usize,
    /// Bytes of one emit request body, or of one payload emitted from Rust. Default 64 KiB.
    pub max_payload_bytes: usize,
    /// Largest `limit` of a history read; larger values are capped to it. Default 1000.
    pub max_history: usize,
    /// Live entries queued for one subscriber before it is disconnected to resume. Default 256,
    /// and never more than half of [`Retention::max_len`](crate::Retention): a subscriber dropped
    /// for lagging must still find its cursor in the history it resumes from.
    pub subscriber_queue: usize,
    /// SSE streams open on this node at once (503 `node_full` beyond, with `Retry-After`: the
    /// client reconnects, possibly to another node). Default 50,000; raise the open-file limit
    /// to match (the binary raises its own).
    pub max_connections: usize,
    /// SSE streams one identity (the `sub` an authorizer returned) may hold open on this node
    /// (429 `too_many_connections` beyond). Anonymous streams count against the node only. Per
    /// node, like every limit here: nodes share no counters.
    /// Default 64: the browser client shares one stream per tab.
    pub max_connections_per_identity: usize,
    /// `POST /emit`s per second one publisher authorized by the authorizer (a JWT with publish
    /// rights, keyed by its `sub`; publishers without a `sub` share one bucket) may make, with
    /// a burst of one second's worth (429 `rate_limited` beyond, with `Retry-After`). Per node:
    /// N nodes allow N times as much. Default 100; `None`: no limit.
    pub emits_per_second: Option<NonZeroU32>,
    /// The same for the holder of the emit key (your own backends), all together. Default
    /// `None`: no limit.
    pub emit_key_emits_per_second: Option<NonZeroU32>,
    /// How long a client may take to send its request head before it is dropped (slow-loris
    /// clients), and a WebSocket client its first `auth` message. Default 10 s. The request head
    /// part applies to [`serve`](crate::serve).
    pub head_timeout: Duration,
    /// Messages per second one WebSocket connection may send, with a burst of one second's
    /// worth: beyond, each is refused with an `error` frame (`rate_limited`), and a connection
    /// that keeps sending at twice the rate is closed (code 4008). Default 50.
    pub ws_messages_per_second: NonZeroU32,
    /// Members one channel's presence holds; a new member beyond is refused (`presence_full`).
    /// Default 100, as Pusher's presence channels.
    pub max_presence_members: usize,
    /// Bytes of the data a member joins with, as JSON (`presence_data_too_large` beyond).
    /// Default 1024.
    pub max_presence_data_bytes: usize,
}

/// A combination of [`Limits`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid limits: {0}")]
pub struct LimitsError(String);

impl Limits {
    /// The largest WebSocket message accepted, in bytes: an emit of the largest payload, or a
    /// subscribe with the longest cursor, with room for the JSON around them. Larger messages
    /// close the connection with code 1009.
    pub fn max_ws_message_bytes(&self) -> usize {
        self.max_payload_bytes.max(crate::cursor::MAX_CURSOR_LEN) + 16 * 1024
    }

    /// Checks that the limits can work together.
    ///
    /// # Errors
    /// A zero where at least one is needed, a channel length above
    /// [`MAX_CHANNEL_LEN`](crate::MAX_CHANNEL_LEN), or so many long channels per connection
    /// that a cursor naming them all would not fit in [`MAX_CURSOR_LEN`](crate::MAX_CURSOR_LEN)
    /// (browsers send it back as `Last-Event-ID` to resume).
    pub fn check(&self) -> Result<(), LimitsError> {
        let fail = |m: String| Err(LimitsError(m));
        for (name, value) in [
            ("max_channels", self.max_channels),
            ("max_channel_len", self.max_channel_len),
            ("max_payload_bytes", self.max_payload_bytes),
            ("max_history", self.max_history),
            ("subscriber_queue", self.subscriber_queue),
            ("max_connections", self.max_connections),
            ("max_connections_per_identity", self.max_connections_per_identity),
        ] {
            if value == 0 {
                return fail(format!("{name} is 0; it must be at least 1"));
            }
        }
        if self.max_channel_len > crate::MAX_CHANNEL_LEN {
            return fail(format!(
                "max_channel_len is {}; at most {} is allowed",
                self.max_channel_len,
                crate::MAX_CHANNEL_LEN
            ));
        }
        // The longest cursor entry: `name=<u64>-<u64>,`.
        let longest = self.max_channels.saturating_mul(self.max_channel_len + 43);
        if longest > crate::MAX_CURSOR_LEN {
            return fail(format!(
                "max_channels {} with max_channel_len {} makes cursors up to {longest} bytes; \
                 at most {} fit (lower either)",
                self.max_channels,
                self.max_channel_len,
                crate::MAX_CURSOR_LEN
            ));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_channels: 100,
            max_channel_len: crate::channel::DEFAULT_MAX_CHANNEL_LEN,
            max_payload_bytes: 64 * 1024,
            max_history: 1000,
            subscriber_queue: 256,
            max_connections: 50_000,
            max_connections_per_identity: 64,
            emits_per_second: NonZeroU32::new(100),
            emit_key_emits_per_second: None,
            head_timeout: Duration::from_secs(10),
            ws_messages_per_second: NonZeroU32::new(50).expect("not zero"),
            max_presence_members: 100,
            max_presence_data_bytes: 1024,
        }
    }
}

/// Everything [`Tidings::from_config`](crate::Tidings::from_config) needs.
///
/// ```
/// use std::time::Duration;
/// use tidings::Config;
/// let config = Config::default()
///     .schema("schema/events.json")
///     .redis_url("redis://127.0.0.1:6379")
///     .heartbeat(Duration::from_secs(10));
/// assert_eq!(config.retention.max_len, 1000);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The event schema file. Default `schema/events.json`.
    pub schema: PathBuf,
    /// Redis to store events in; `None` (the default) uses the embedded in-memory store. A Redis
    /// Cluster is given as comma-separated seed URLs or one `redis+cluster://host:port`.
    pub redis_url: Option<String>,
    /// Prefix of Redis keys. Default `tidings:`.
    pub key_prefix: String,
    /// Response timeout for Redis writes and reads. Default 2 s.
    pub redis_timeout: Duration,
    /// How a node finds new entries on Redis. Default [`TailMode::Auto`].
    pub redis_tail: TailMode,
    /// How long [`Tidings::from_config`](crate::Tidings::from_config) keeps trying to reach a
    /// Redis that does not answer at start (with backoff, logging each attempt), before it fails.
    /// Zero tries once. Default 30 s.
    pub redis_wait: Duration,
    /// Appends that may wait for Redis at once, and their bytes; beyond either, an emit answers
    /// 503 `store_busy` at once. Default 10,000 and 64 MiB.
    pub redis_max_pending: (usize, usize),
    /// How long an emit's idempotency key is remembered per channel: a retry with the same key
    /// within it stores nothing and returns the first id. Default 5 minutes.
    pub idempotency_window: Duration,
    /// History kept per channel.
    pub retention: Retention,
    /// The bearer key `POST /emit` requires; `None` generates a random one at start.
    pub emit_key: Option<String>,
    /// Interval of heartbeats: a `tidings.ping` event on every stream with nothing else to send,
    /// announced to clients in `tidings.ready` so they can tell a dead link from a quiet one.
    /// Default 15 s.
    pub heartbeat: Duration,
    /// How long one write to a stream may make no progress before the stream is closed and its
    /// connection slot released: a client that stopped reading, or a peer that vanished without
    /// closing. On the standalone server it is also the socket's `TCP_USER_TIMEOUT` (Linux): sent
    /// data that stays unacknowledged that long ends the connection, even while the kernel
    /// buffer still takes small writes. Default 30 s.
    pub write_timeout: Duration,
    /// Reconnect delay suggested to browsers in the `retry:` field. Default 2 s.
    pub retry: Duration,
    /// Request limits.
    pub limits: Limits,
    /// A directory of static files (a built single-page app) served at `/app/`; `None` (the
    /// default) serves nothing there. Unknown paths under `/app/` get its `index.html`, so
    /// client-side routes load the app.
    pub app_dir: Option<PathBuf>,
    /// Decides who a request is and what it may read or publish; runs before any stream opens,
    /// any history read, and any HTTP emit without the emit key. `None` (the default): reading
    /// is open and only the emit key publishes. See [`crate::auth`].
    pub authorizer: Option<Arc<dyn Authorizer>>,
    /// Private channel patterns such as `user:{sub}`: a matching channel is readable only by
    /// the identity whose `sub` fills `{sub}` (401 without an identity, 403 for another one),
    /// whatever the authorizer allowed. A pattern without `{sub}` is readable by no one.
    pub private_channels: Vec<String>,
    /// Origins (`https://app.example.com`) allowed to call tidings from a browser on another
    /// origin, with credentials. Empty (the default): same-origin only, no CORS headers.
    pub cors_origins: Vec<String>,
    /// Channel patterns with presence (who is here), such as `doc:*` (a trailing `*` matches
    /// any rest). None by default.
    pub presence: Vec<String>,
    /// How long a connection stays present after its node last refreshed it: the bound on how
    /// long the members of a node that died still show. Refreshed every quarter of it. Default
    /// 20 s.
    pub presence_ttl: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("schema", &self.schema)
            .field("redis_url", &self.redis_url)
            .field("key_prefix", &self.key_prefix)
            .field("redis_timeout", &self.redis_timeout)
            .field("redis_tail", &self.redis_tail)
            .field("redis_wait", &self.redis_wait)
            .field("redis_max_pending", &self.redis_max_pending)
            .field("idempotency_window", &self.idempotency_window)
            .field("retention", &self.retention)
            .field("emit_key", &self.emit_key.as_ref().map(|_| "<set>"))
            .field("heartbeat", &self.heartbeat)
            .field("write_timeout", &self.write_timeout)
            .field("retry", &self.retry)
            .field("limits", &self.limits)
            .field("app_dir", &self.app_dir)
            .field("authorizer", &self.authorizer.as_ref().map(|_| "<set>"))
            .field("private_channels", &self.private_channels)
            .field("cors_origins", &self.cors_origins)
            .field("presence", &self.presence)
            .field("presence_ttl", &self.presence_ttl)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            schema: PathBuf::from("schema/events.json"),
            redis_url: None,
            key_prefix: "tidings:".into(),
            redis_timeout: Duration::from_secs(2),
            redis_tail: TailMode::Auto,
            redis_wait: Duration::from_secs(30),
            redis_max_pending: (10_000, 64 << 20),
            idempotency_window: crate::store::DEFAULT_IDEMPOTENCY_WINDOW,
            retention: Retention::default(),
            emit_key: None,
            heartbeat: Duration::from_secs(15),
            write_timeout: Duration::from_secs(30),
            retry: Duration::from_secs(2),
            limits: Limits::default(),
            app_dir: None,
            authorizer: None,
            private_channels: Vec::new(),
            cors_origins: Vec::new(),
            presence: Vec::new(),
            presence_ttl: Duration::from_secs(20),
        }
    }
}

impl Config {
    /// Sets [`Config::schema`].
    pub fn schema(mut self, path: impl Into<PathBuf>) -> Self {
        self.schema = path.into();
        self
    }

    /// Sets [`Config::redis_url`].
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// Sets [`Config::redis_tail`].
    pub fn redis_tail(mut self, mode: TailMode) -> Self {
        self.redis_tail = mode;
        self
    }

    /// Sets [`Config::redis_wait`].
    pub fn redis_wait(mut self, wait: Duration) -> Self {
        self.redis_wait = wait;
        self
    }

    /// Sets [`Config::redis_max_pending`].
    pub fn redis_max_pending(mut self, appends: usize, bytes: usize) -> Self {
        self.redis_max_pending = (appends.max(1), bytes.max(1));
        self
    }

    /// Sets [`Config::idempotency_window`] (at least one millisecond).
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window.max(Duration::from_millis(1));
        self
    }

    /// Sets [`Config::key_prefix`].
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets [`Config::retention`].
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets [`Config::emit_key`].
    pub fn emit_key(mut self, key: impl Into<String>) -> Self {
        self.emit_key = Some(key.into());
        self
    }

    /// Sets [`Config::write_timeout`].
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets [`Config::heartbeat`].
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Sets [`Config::retry`].
    pub fn retry(mut self, delay: Duration) -> Self {
        self.retry = delay;
        self
    }

    /// Sets [`Config::limits`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`Config::app_dir`].
    pub fn app_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.app_dir = Some(dir.into());
        self
    }

    /// Sets [`Config::authorizer`].
    pub fn authorizer(mut self, hook: impl Authorizer) -> Self {
        self.authorizer = Some(Arc::new(hook));
        self
    }

    /// Adds a pattern to [`Config::private_channels`].
    pub fn private_channel(mut self, pattern: impl Into<String>) -> Self {
        self.private_channels.push(pattern.into());
        self
    }

    /// Adds a channel pattern to [`Config::presence`].
    pub fn presence(mut self, pattern: impl Into<String>) -> Self {
        self.presence.push(pattern.into());
        self
    }

    /// Sets [`Config::presence_ttl`].
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self
    }

    /// Adds an origin to [`Config::cors_origins`].
    pub fn cors_origin(mut self, origin: impl Into<String>) -> Self {
        self.cors_origins.push(origin.into());
        self
    }
}
