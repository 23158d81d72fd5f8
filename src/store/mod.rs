//! Storage: one capped, append-only stream per channel.
//!
//! [`Store`] is the seam between tidings and where events live. [`RedisStore`] keeps one Redis
//! Stream per channel; [`MemoryStore`] keeps the same structure in process, with the same id
//! format and trimming semantics, and is the default when no Redis is configured. Both pass one
//! conformance suite (`tests/store_conformance.rs`).

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

pub use self::memory::MemoryStore;
pub use self::redis::{RedisOptions, RedisStore, TailMode};
use crate::channel::Channel;
use crate::id::StreamId;

/// One stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its id in the channel's stream.
    pub id: StreamId,
    /// The event's wire name (`chat.message`).
    pub event: Arc<str>,
    /// The payload, as compact JSON text on one line.
    pub data: Arc<str>,
}

/// How much history each channel keeps.
///
/// ```
/// use std::time::Duration;
/// use tidings::Retention;
/// let r = Retention::default().max_len(500).ttl(Duration::from_secs(3600));
/// assert_eq!(r.max_len, 500);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Entries kept per channel, at least (Redis trims `MAXLEN ~`, in whole nodes, so a stream may
    /// briefly hold some more). Default 1000.
    pub max_len: usize,
    /// Drop a channel's stream when nothing was added to it for this long. Default: never.
    pub ttl: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_len: 1000,
            ttl: None,
        }
    }
}

impl Retention {
    /// Sets [`Retention::max_len`] (at least 1).
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.max(1);
        self
    }

    /// Sets [`Retention::ttl`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// What a resume read found: the entries after a cursor, and whether history was lost.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Replay {
    /// Entries after the position, oldest first, at most the limit asked for.
    pub entries: Vec<Entry>,
    /// Set when entries after the position are gone (trimmed, expired, or the stream was reset).
    pub trimmed: Option<Trimmed>,
}

/// History after a cursor is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Trimmed {
    /// The oldest entry the channel still holds, if any.
    pub oldest: Option<StreamId>,
    /// Where reading continues: every entry at or before it is gone or was already seen.
    pub resume_from: StreamId,
}

/// Which slice of history to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Range {
    /// The newest entries.
    Latest,
    /// Entries after an id (exclusive), paging forward.
    After(StreamId),
    /// Entries before an id (exclusive), paging back.
    Before(StreamId),
}

/// New entries in one channel, found by [`Store::tail`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TailBatch {
    /// The channel.
    pub channel: Channel,
    /// Entries after the position given, oldest first.
    pub entries: Vec<Entry>,
    /// True when entries between the position given and the first one returned may have been
    /// trimmed before they were read: whoever relies on this batch being contiguous must
    /// re-read from its own cursor instead.
    pub gap: bool,
}

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// An entry in the store does not have the fields tidings writes.
    #[error("malformed entry {id} in {channel}: {problem}")]
    Malformed {
        /// The channel.
        channel: String,
        /// The entry's id.
        id: String,
        /// What is wrong.
        problem: String,
    },
}

impl StoreError {
    /// True when retrying later may succeed (a connection or timeout problem).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Redis(e) => {
                e.is_timeout() || e.is_connection_dropped() || e.is_io_error() || e.is_connection_refusal()
            }
            StoreError::Malformed { .. } => false,
        }
    }
}

/// Where events live. Object-safe so it can be shared as `Arc<dyn Store>`.
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/health` (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// Appends an event to `channel`'s stream, trimming it to the retention, and returns its id.
    fn append<'a>(
        &'a self,
        channel: &'a Channel,
        event: &'a str,
        data: &'a str,
    ) -> BoxFuture<'a, Result<StreamId, StoreError>>;

    /// Reads up to `limit` entries, oldest first, from the slice `range` names.
    fn history<'a>(
        &'a self,
        channel: &'a Channel,
        range: Range,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>>;

    /// Reads up to `limit` entries after `after` and says, in the same atomic read, whether
    /// entries after `after` have been trimmed away.
    fn replay<'a>(
        &'a self,
        channel: &'a Channel,
        after: StreamId,
        limit: usize,
    ) -> BoxFuture<'a, Result<Replay, StoreError>>;

    /// The id of the newest entry, or [`StreamId::ZERO`] when the channel holds none.
    fn last_id<'a>(&'a self, channel: &'a Channel) -> BoxFuture<'a, Result<StreamId, StoreError>>;

    /// Waits up to `wait` for entries after the given positions and returns those found (at most
    /// `count` per channel). Returns early, possibly empty, after [`Store::wake`].
    fn tail<'a>(
        &'a self,
        positions: &'a [(Channel, StreamId)],
        wait: Duration,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<TailBatch>, StoreError>>;

    /// Makes a pending or the next [`Store::tail`] return, so its caller can change positions.
    fn wake(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Checks that the store answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
