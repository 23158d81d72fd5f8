//! Settings of a tidings server, with the defaults the binary uses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authorizer;
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
    /// Live entries queued for one subscriber before it is disconnected to resume. Default 256,
    /// and never more than half of [`Retention::max_len`](crate::Retention): a subscriber dropped
    /// for lagging must still find its cursor in the history it resumes from.
    pub subscriber_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_channels: 100,
            max_payload_bytes: 64 * 1024,
            max_history: 1000,
            subscriber_queue: 256,
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
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("schema", &self.schema)
            .field("redis_url", &self.redis_url)
            .field("key_prefix", &self.key_prefix)
            .field("redis_timeout", &self.redis_timeout)
            .field("redis_tail", &self.redis_tail)
            .field("retention", &self.retention)
            .field("emit_key", &self.emit_key.as_ref().map(|_| "<set>"))
            .field("heartbeat", &self.heartbeat)
            .field("retry", &self.retry)
            .field("limits", &self.limits)
            .field("app_dir", &self.app_dir)
            .field("authorizer", &self.authorizer.as_ref().map(|_| "<set>"))
            .field("private_channels", &self.private_channels)
            .field("cors_origins", &self.cors_origins)
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
            retention: Retention::default(),
            emit_key: None,
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(2),
            limits: Limits::default(),
            app_dir: None,
            authorizer: None,
            private_channels: Vec::new(),
            cors_origins: Vec::new(),
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

    /// Adds an origin to [`Config::cors_origins`].
    pub fn cors_origin(mut self, origin: impl Into<String>) -> Self {
        self.cors_origins.push(origin.into());
        self
    }
}
