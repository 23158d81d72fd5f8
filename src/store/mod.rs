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
pub use crate::id::{Epoch, Position};

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

impl Entry {
    /// The payload parsed (`None` when it is not JSON).
    pub(crate) fn parsed(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.data).ok()
    }

    /// An entry tidings cannot read (written by another tool, or without its fields): it keeps
    /// its place in the stream, so readers move past it, but is never delivered.
    pub fn unreadable(id: StreamId) -> Entry {
        Entry {
            id,
            event: Arc::from(""),
            data: Arc::from("null"),
        }
    }

    /// False for [`Entry::unreadable`] entries.
    pub fn is_readable(&self) -> bool {
        !self.event.is_empty()
    }
}

/// Entries skipped because they could not be read or name an event the schema does not know,
/// since the process started (each time a reader met one).
pub fn skipped_entries() -> u64 {
    skip::COUNT.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) mod skip {
    //! Skipped entries: counted, and logged at most once a second so a stream full of foreign
    //! entries cannot flood the log.
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    use crate::store::Entry;

    pub(super) static COUNT: AtomicU64 = AtomicU64::new(0);

    /// True when `entry` of `channel` can go to a client: readable (the store already noted it
    /// otherwise), and an event `known` accepts (noted here otherwise).
    pub(crate) fn deliverable(channel: &str, entry: &Entry, known: &dyn Fn(&str) -> bool) -> bool {
        if !entry.is_readable() {
            return false;
        }
        if known(&entry.event) {
            return true;
        }
        note(
            channel,
            &entry.id,
            &format!("event {:?} is not in the loaded schema", &*entry.event),
        );
        false
    }
    static LAST_LOG: Mutex<Option<(Instant, u64)>> = Mutex::new(None);

    /// Notes that the entry `id` of `channel` was skipped, and why.
    pub(crate) fn note(channel: &str, id: &dyn std::fmt::Display, problem: &str) {
        let total = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = LAST_LOG.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let since = match *last {
            Some((at, _)) if now.duration_since(at).as_secs() < 1 => return,
            Some((_, logged_at)) => total - logged_at - 1,
            None => 0,
        };
        *last = Some((now, total));
        tracing::warn!(
            channel,
            id = %id,
            problem,
            skipped_total = total,
            not_logged_since_last = since,
            "skipping a stream entry tidings cannot deliver; the channel goes on after it"
        );
    }
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
    /// The channel's epoch now (`None` when it has no stream, or one tidings did not create).
    pub epoch: Option<Epoch>,
}

impl Replay {
    /// The answer for a channel that has no stream: a cursor past zero points into history that
    /// no longer exists.
    pub(crate) fn no_stream(after: Position) -> Replay {
        Replay {
            entries: Vec::new(),
            trimmed: (after.id > StreamId::ZERO).then_some(Trimmed {
                oldest: None,
                resume_from: after.id,
                reason: Lost::Trimmed,
            }),
            epoch: None,
        }
    }
}

/// A page of history and the epoch it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct History {
    /// Entries, oldest first.
    pub entries: Vec<Entry>,
    /// The channel's epoch (see [`Replay::epoch`]).
    pub epoch: Option<Epoch>,
}

/// How to append: options that most appends leave at their defaults.
///
/// ```
/// use std::time::Duration;
/// use tidings::store::AppendOptions;
/// let opts = AppendOptions::default().idempotency_key("order-42-paid");
/// assert_eq!(opts.idempotency_window, Duration::from_secs(300));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendOptions<'a> {
    /// Store the event at most once per channel and key within
    /// [`AppendOptions::idempotency_window`]: a retry with the same key returns the first id.
    pub idempotency_key: Option<&'a str>,
    /// How long a key is remembered. Default 5 minutes.
    pub idempotency_window: Duration,
}

impl Default for AppendOptions<'_> {
    fn default() -> Self {
        AppendOptions {
            idempotency_key: None,
            idempotency_window: DEFAULT_IDEMPOTENCY_WINDOW,
        }
    }
}

/// How long an idempotency key is remembered unless configured otherwise.
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(300);

impl<'a> AppendOptions<'a> {
    /// Sets [`AppendOptions::idempotency_key`].
    pub fn idempotency_key(mut self, key: &'a str) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    /// Sets [`AppendOptions::idempotency_window`] (at least one millisecond).
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window.max(Duration::from_millis(1));
        self
    }
}

/// What an append stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Appended {
    /// The event's id: new, or the first one stored under the same idempotency key.
    pub id: StreamId,
    /// True when an earlier append with the same idempotency key had stored it already.
    pub duplicate: bool,
}

/// History after a cursor is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Trimmed {
    /// The oldest entry the channel still holds, if any.
    pub oldest: Option<StreamId>,
    /// Where reading continues: every entry at or before it is gone or was already seen.
    pub resume_from: StreamId,
    /// Why.
    pub reason: Lost,
}

/// Why history after a cursor is gone (the `reason` of a `tidings.reset` frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lost {
    /// Entries after the cursor were trimmed (capped history, `XDEL`), or the channel's stream
    /// expired or was deleted and not created again.
    Trimmed,
    /// The channel's history was replaced: the cursor names another epoch (the store restarted
    /// without persistence, the key was deleted, evicted or expired and created again).
    Replaced,
    /// The cursor is past the newest entry: the tail it saw was lost (a restore from an older
    /// snapshot, a failover to a replica that had not received it).
    Ahead,
}

impl Lost {
    /// The name used on the wire: `trimmed`, `replaced`, `ahead`.
    pub fn as_str(self) -> &'static str {
        match self {
            Lost::Trimmed => "trimmed",
            Lost::Replaced => "replaced",
            Lost::Ahead => "ahead",
        }
    }
}

/// Decides whether a read from `after` follows on from it, for a stream whose epoch is `epoch`,
/// newest id `last`, oldest held `oldest`, and newest removed id at most `removed_upto`.
///
/// A position without epoch (a cursor tidings wrote before epochs, or one built by hand from
/// ids) is checked by id alone, as before: it cannot tell a history that was replaced by one
/// with greater ids. Every cursor the server writes names the epoch.
pub(crate) fn check_resume(
    after: Position,
    epoch: Option<Epoch>,
    last: StreamId,
    oldest: Option<StreamId>,
    removed_upto: StreamId,
) -> Option<Trimmed> {
    let lost = |resume_from, reason| {
        Some(Trimmed {
            oldest,
            resume_from,
            reason,
        })
    };
    if after.id == StreamId::ZERO {
        // Nothing seen: whatever the epoch, everything held is new.
        return if removed_upto > StreamId::ZERO {
            lost(removed_upto, Lost::Trimmed)
        } else {
            None
        };
    }
    if after.epoch.is_some() && after.epoch != epoch {
        // Another history: nothing in this one was seen.
        return lost(StreamId::ZERO, Lost::Replaced);
    }
    if after.id > last {
        lost(last, Lost::Ahead)
    } else if removed_upto > after.id {
        lost(removed_upto, Lost::Trimmed)
    } else {
        None
    }
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
    /// The stream's epoch: the one given with the position when the batch follows on from it,
    /// else what the store read. A different epoch than given means the history was replaced.
    pub epoch: Option<Epoch>,
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
    /// Too many appends are already waiting for the store (a stalled Redis): refused at once
    /// rather than queued without bound. Nothing was stored; retry later.
    #[error("{waiting} appends ({bytes} bytes) are already waiting for Redis, the most allowed ({max_count} appends, {max_bytes} bytes); retry later")]
    Busy {
        /// Appends waiting.
        waiting: usize,
        /// Their bytes.
        bytes: usize,
        /// The bound on appends.
        max_count: usize,
        /// The bound on bytes.
        max_bytes: usize,
    },
    /// The store cannot be used (a Redis too old, say); the message says what is needed.
    #[error("{0}")]
    Unsupported(String),
    /// A reply from the store does not have the shape tidings expects.
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
                use ::redis::{ErrorKind, ServerErrorKind};
                // A Redis that is loading its dataset (after a restart), a cluster between
                // masters or slots on the move: all answer again soon.
                let passing = matches!(
                    e.kind(),
                    ErrorKind::Server(
                        ServerErrorKind::BusyLoading
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::ClusterDown
                            | ServerErrorKind::MasterDown
                    )
                );
                passing
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_io_error()
                    || e.is_connection_refusal()
            }
            StoreError::Busy { .. } => true,
            StoreError::Malformed { .. } | StoreError::Unsupported(_) => false,
        }
    }
}

/// One connection's join to a channel's presence ([`Store::presence_join`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct PresenceJoin<'a> {
    /// The member: one per identity (a user with two tabs is one member).
    pub member: &'a str,
    /// The connection, unique across nodes.
    pub conn: &'a str,
    /// The member as JSON (`{"id", "sub", "name", "data"}`), kept for snapshots and written
    /// into the join entry.
    pub info: &'a str,
    /// When the connection's presence lapses unless refreshed (ms since the Unix epoch).
    pub until_ms: u64,
    /// Members the channel may hold; a new member beyond is refused ([`Joined::Full`]).
    pub max_members: usize,
}

impl<'a> PresenceJoin<'a> {
    /// A join of connection `conn` of `member`, described by `info`, until `until_ms`.
    pub fn new(member: &'a str, conn: &'a str, info: &'a str, until_ms: u64) -> Self {
        PresenceJoin {
            member,
            conn,
            info,
            until_ms,
            max_members: usize::MAX,
        }
    }

    /// Sets [`PresenceJoin::max_members`].
    pub fn max_members(mut self, max: usize) -> Self {
        self.max_members = max;
        self
    }
}

/// What a [`Store::presence_join`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Joined {
    /// The member is new on the channel: a `presence.join` entry was written.
    First,
    /// The member was there already (another connection, or this one again).
    Again,
    /// The channel holds its limit of members; nothing changed.
    Full,
}

/// The event names of the entries presence writes into a channel's presence stream.
pub(crate) const PRESENCE_JOIN: &str = "presence.join";
/// See [`PRESENCE_JOIN`].
pub(crate) const PRESENCE_LEAVE: &str = "presence.leave";

/// Where events live. Object-safe so it can be shared as `Arc<dyn Store>`.
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/health` (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// Appends an event to `channel`'s stream, trimming it to the retention, and returns its id
    /// (with an idempotency key already seen, the first id, storing nothing). A channel whose
    /// stream does not exist gets a new one, with a new [`Epoch`].
    fn append<'a>(
        &'a self,
        channel: &'a Channel,
        event: &'a str,
        data: &'a str,
        opts: AppendOptions<'a>,
    ) -> BoxFuture<'a, Result<Appended, StoreError>>;

    /// Reads up to `limit` entries, oldest first, from the slice `range` names, and the epoch
    /// they belong to.
    fn history<'a>(
        &'a self,
        channel: &'a Channel,
        range: Range,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, StoreError>>;

    /// Reads up to `limit` entries after `after` and says, in the same atomic read, whether
    /// entries after `after` are gone: trimmed away, or in another epoch than `after`'s (then
    /// every entry the channel holds is after it), or `after` is past the newest entry.
    fn replay<'a>(
        &'a self,
        channel: &'a Channel,
        after: Position,
        limit: usize,
    ) -> BoxFuture<'a, Result<Replay, StoreError>>;

    /// The id of the newest entry ([`StreamId::ZERO`] when the channel holds none) and the
    /// channel's epoch.
    fn position<'a>(&'a self, channel: &'a Channel) -> BoxFuture<'a, Result<Position, StoreError>>;

    /// Waits up to `wait` for entries after the given positions and returns those found (at most
    /// `count` per channel). Returns early, possibly empty, after [`Store::wake`].
    fn tail<'a>(
        &'a self,
        positions: &'a [(Channel, Position)],
        wait: Duration,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<TailBatch>, StoreError>>;

    /// Makes a pending or the next [`Store::tail`] return, so its caller can change positions.
    fn wake(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Checks that the store answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Adds a connection to `channel`'s presence, atomically: when its member is new there, a
    /// `presence.join` entry (data: the member's `info`) is appended to the channel's presence
    /// stream ([`Channel::presence`]), which subscribers tail like any channel.
    fn presence_join<'a>(
        &'a self,
        channel: &'a Channel,
        join: PresenceJoin<'a>,
    ) -> BoxFuture<'a, Result<Joined, StoreError>> {
        let _ = (channel, join);
        Box::pin(std::future::ready(Err(StoreError::Unsupported(format!(
            "the {} store keeps no presence",
            self.kind()
        )))))
    }

    /// Removes a connection from `channel`'s presence; when it was its member's last, appends a
    /// `presence.leave` entry. Returns whether the member left.
    fn presence_leave<'a>(
        &'a self,
        channel: &'a Channel,
        conn: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let _ = (channel, conn);
        Box::pin(std::future::ready(Ok(false)))
    }

    /// Moves the lapse of the given connections of `channel` to `until_ms`.
    fn presence_refresh<'a>(
        &'a self,
        channel: &'a Channel,
        conns: &'a [String],
        until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = (channel, conns, until_ms);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Removes the connections of `channel` that lapsed by `now_ms` (their node stopped
    /// refreshing them: it died), as [`Store::presence_leave`] would; returns how many members
    /// left.
    fn presence_sweep<'a>(
        &'a self,
        channel: &'a Channel,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        let _ = (channel, now_ms);
        Box::pin(std::future::ready(Ok(0)))
    }

    /// The `info` of every connection present on `channel` (a member with two connections
    /// appears twice).
    fn presence_members<'a>(
        &'a self,
        channel: &'a Channel,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        let _ = channel;
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> StreamId {
        StreamId::new(ms, 0)
    }

    /// The reason and resume point for a cursor at `at` (in `given`) on a stream of epoch `now`
    /// holding ids 10..=20, with everything up to `removed` gone.
    fn check(at: u64, given: Option<Epoch>, now: Option<Epoch>, removed: u64) -> Option<(Lost, u64)> {
        check_resume(
            Position::new(id(at), given),
            now,
            id(20),
            Some(id(10)),
            id(removed),
        )
        .map(|t| (t.reason, t.resume_from.ms))
    }

    #[test]
    fn a_resume_is_checked_by_epoch_then_by_id() {
        let (a, b) = (Some(Epoch::random()), Some(Epoch::random()));
        assert_ne!(a, b);
        assert_eq!(check(15, a, a, 9), None, "same history, nothing lost");
        assert_eq!(check(15, a, b, 9), Some((Lost::Replaced, 0)));
        assert_eq!(
            check(15, a, None, 9),
            Some((Lost::Replaced, 0)),
            "the stream lost its epoch"
        );
        assert_eq!(check(15, None, a, 9), None, "an id alone is checked by id alone");
        assert_eq!(
            check(15, None, None, 9),
            None,
            "no epoch on either side: by id alone"
        );
        assert_eq!(check(25, a, a, 9), Some((Lost::Ahead, 20)));
        assert_eq!(check(5, a, a, 9), Some((Lost::Trimmed, 9)));
        assert_eq!(check(5, None, a, 9), Some((Lost::Trimmed, 9)));
        assert_eq!(
            check(0, a, b, 0),
            None,
            "nothing seen, nothing lost, whatever the epoch"
        );
        assert_eq!(check(0, None, a, 9), Some((Lost::Trimmed, 9)));
    }
}
