//! Settings of a tidings server, with the defaults the binary uses.

use std::path::PathBuf;
use std::time::Duration;

use crate::store::{Retention, TailMode};

/// Limits on what one request may ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Channels one SSE connection may watch. Default 100.
    pub max_channels: usize,
    /// Bytes of one emit request body, or of one payload emitted from Rust. Default 64 KiB.
    pub max_payload_bytes: usize,
    /// Largest `limit` of a history read; larger values are capped to it. Default 1000.
    pub max_history: usize,
    /// Live entries queued for one subscriber before it is disconnected to resume. Default 1024.
    pub subscriber_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_channels: 100,
            max_payload_bytes: 64 * 1024,
            max_history: 1000,
            subscriber_queue: 1024,
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
#[derive(Clone, Debug)]
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
    /// History kept per channel.
    pub retention: Retention,
    /// The bearer key `POST /emit` requires; `None` generates a random one at start.
    pub emit_key: Option<String>,
    /// Interval of SSE heartbeat comments. Default 15 s.
    pub heartbeat: Duration,
    /// Reconnect delay suggested to browsers in the `retry:` field. Default 2 s.
    pub retry: Duration,
    /// Request limits.
    pub limits: Limits,
    /// A directory of static files (a built single-page app) served at `/app/`; `None` (the
    /// default) serves nothing there. Unknown paths under `/app/` get its `index.html`, so
    /// client-side routes load the app.
    pub app_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            schema: PathBuf::from("schema/events.json"),
            redis_url: None,
            key_prefix: "tidings:".into(),
            redis_timeout: Duration::from_secs(2),
            redis_tail: TailMode::Auto,
            retention: Retention::default(),
            emit_key: None,
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            limits: Limits::default(),
            app_dir: None,
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
}
