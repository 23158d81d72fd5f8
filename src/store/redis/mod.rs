//! Redis Streams: one stream per channel, capped with `XADD … MAXLEN ~`.
//!
//! Connections: writes and history reads go through one [`ConnectionManager`] with an explicit
//! response timeout; appends from concurrent tasks leave on it in pipelines ([`batch`]). Live tailing ([`Store::tail`]) uses one more connection, in one of two modes
//! ([`TailMode`]):
//!
//! - **keyspace** (the default when the server allows it): a pub/sub subscription to keyspace
//!   notifications says which streams got entries, and only those are read, in one pipeline. An
//!   idle channel costs nothing, however many a node watches.
//! - **xread**: one blocking `XREAD` over every watched stream, on its own connection with no
//!   response timeout (redis-rs would otherwise time it out and stall every command queued behind
//!   it). Works everywhere, but each read names every watched stream, so its cost grows with the
//!   number of channels watched.
//!
//! Either way a node holds two connections to Redis, however many clients and channels it serves.
//!
//! # Redis Cluster
//!
//! `--redis` may list several seed URLs, comma-separated, or use the `redis+cluster://` scheme; a
//! single plain URL whose server reports `cluster_enabled:1` counts too (see [`cluster`]). Then:
//!
//! - Commands go through one redis-rs `cluster_async::ClusterConnection` (with the same explicit
//!   response timeout), which routes each command to the master owning its key's slot. Every
//!   command, script and `MULTI` tidings sends names one key, so none can fail with `CROSSSLOT`:
//!   the trim-state script used by [`Store::tail`] runs once per stream, and the reads of several
//!   streams are separate requests (sent concurrently) instead of one pipeline.
//! - Live tailing uses keyspace notifications only, with one subscription per master (they are
//!   node-local), kept in line with the topology ([`keyspace`]). `XREAD` tailing is refused: one
//!   blocking `XREAD` cannot span slots, and one per slot or per channel would cost connections.
//!   The masters must allow `CONFIG SET notify-keyspace-events` or have `Kt` set already.
//!
//! Connections per node, however many clients and channels it serves: one command connection to
//! every node of the slot map (redis-rs connects to masters and replicas alike) plus one
//! subscription to every master, so two per master and one per replica. (Briefly one more per
//! master while a subscription is set up: notifications are enabled over a short-lived
//! connection.)

mod batch;
mod cluster;
mod keyspace;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Value};

use super::{
    check_resume, AppendOptions, Appended, Entry, History, Joined, PresenceJoin, Range, Replay, Retention,
    Store, StoreError, TailBatch,
};
use crate::channel::Channel;
use crate::id::{Epoch, Position, StreamId};

// A stream's epoch is the name of a consumer group tidings creates with the stream,
// `tidings-epoch:<epoch>`: it lives in the stream's own key, so it is deleted, evicted, expired,
// persisted, replicated and migrated together with the entries, and costs nothing per entry. No
// consumer ever reads through it. A stream tidings did not create (or created before epochs) has
// no epoch; its positions are checked by id alone.

/// Defines `epoch(key)` (the stream's epoch, `''` when it has none) and `state(key)` for the
/// scripts below: `{last, max_deleted, first, removed, epoch}` of an existing stream, `removed`
/// being 1 when it has lost entries (`entries-added` > `length`). Trimming does not update
/// `max-deleted-entry-id` (only `XDEL` does), so `removed` and `first` are what tell that history
/// was trimmed: see [`StreamState::removed_upto`].
const STATE_LUA: &str = r#"
local function epoch(key)
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    for i = 1, #g, 2 do
      if g[i] == 'name' and string.sub(g[i + 1], 1, 14) == 'tidings-epoch:' then
        return string.sub(g[i + 1], 15)
      end
    end
  end
  return ''
end
local function state(key)
  local info = redis.call('XINFO', 'STREAM', key)
  local last, maxdel, first, added, len = '0-0', '0-0', '', 0, 0
  for i = 1, #info, 2 do
    local k = info[i]
    if k == 'last-generated-id' then last = info[i + 1]
    elseif k == 'max-deleted-entry-id' then maxdel = info[i + 1]
    elseif k == 'entries-added' then added = info[i + 1]
    elseif k == 'length' then len = info[i + 1]
    elseif k == 'first-entry' then
      local fe = info[i + 1]
      if type(fe) == 'table' then first = fe[1] end
    end
  end
  local removed = 0
  if added > len then removed = 1 end
  return {last, maxdel, first, removed, epoch(key)}
end
"#;

/// Reads the stream's trim state and a page of entries in one atomic step, so the answer to
/// "was anything after this cursor trimmed?" and the entries returned describe the same moment.
/// A cursor in another epoch (`ARGV[3]`, `''` for none) reads from the start: nothing of this
/// history was seen. (`XRANGE (<max id>` is an error, and nothing can follow the largest id.)
const REPLAY_LUA: &str = r#"
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {0} end
local out = state(key)
local from = '(' .. ARGV[1]
if ARGV[3] ~= '' and ARGV[1] ~= '0-0' and ARGV[3] ~= out[5] then from = '-' end
local page = {}
if from ~= '(18446744073709551615-18446744073709551615' then
  page = redis.call('XRANGE', key, from, '+', 'COUNT', ARGV[2])
end
out[6] = page
return out
"#;

/// `{}` for no stream, else `{id of the newest entry or '0-0', epoch}`.
const POSITION_LUA: &str = r#"
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {} end
local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
local id = '0-0'
if #newest > 0 then id = newest[1][1] end
return {id, epoch(key)}
"#;

/// `{epoch, page}`: `XRANGE` or `XREVRANGE` (`ARGV[1]`) from `ARGV[2]` to `ARGV[3]`, at most
/// `ARGV[4]` entries.
const HISTORY_LUA: &str = r#"
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'', {}} end
return {epoch(key), redis.call(ARGV[1], key, ARGV[2], ARGV[3], 'COUNT', ARGV[4])}
"#;

/// The append that is more than one `XADD`: it creates the stream with its epoch (`ARGV[1]`),
/// refreshes the TTL (`ARGV[5]` ms, `0` for none), and, with an idempotency record key
/// (`KEYS[2]`, in the stream's slot), stores at most once per key within `ARGV[6]` ms. Returns
/// `{id, 1}` for a key already seen (storing nothing), else `{id, 0}`.
const APPEND_LUA: &str = r#"
local key = KEYS[1]
if KEYS[2] then
  local first = redis.call('GET', KEYS[2])
  if first then return {first, 1} end
end
local fresh = redis.call('EXISTS', key) == 0
local id = redis.call('XADD', key, 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[3], 'd', ARGV[4])
if fresh then redis.call('XGROUP', 'CREATE', key, 'tidings-epoch:' .. ARGV[1], '$') end
if ARGV[5] ~= '0' then redis.call('PEXPIRE', key, ARGV[5]) end
if KEYS[2] then redis.call('SET', KEYS[2], id, 'PX', ARGV[6]) end
return {id, 0}
"#;

/// For each stream and position: `{0}` when the entry at the position still exists (so nothing
/// after it was trimmed) or the stream is gone, else `state(key)`.
const GAP_LUA: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  local pos = ARGV[i]
  local answer = {0}
  if (pos == '0-0' or #redis.call('XRANGE', key, pos, pos) == 0) and redis.call('EXISTS', key) == 1 then
    answer = state(key)
  end
  out[i] = answer
end
return out
"#;

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Presence of one channel: KEYS = the presence stream, the connections hash (conn → member
/// info), their lapse times (a sorted set), the connections per member (a hash). `leave`
/// removes a connection and, when it was its member's last, appends the `presence.leave`
/// entry. The member id is read back from the info (`cjson`), so a connection is one field.
const PRESENCE_LIB: &str = r#"
local function touch(ttl)
  for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
local function append(event, info, epoch, maxlen)
  local fresh = redis.call('EXISTS', KEYS[1]) == 0
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'e', event, 'd', info)
  if fresh then redis.call('XGROUP', 'CREATE', KEYS[1], 'tidings-epoch:' .. epoch, '$') end
end
local function leave(conn, epoch, maxlen)
  local info = redis.call('HGET', KEYS[2], conn)
  redis.call('ZREM', KEYS[3], conn)
  if not info then return 0 end
  redis.call('HDEL', KEYS[2], conn)
  local member = cjson.decode(info)['id']
  if redis.call('HINCRBY', KEYS[4], member, -1) > 0 then return 0 end
  redis.call('HDEL', KEYS[4], member)
  append('presence.leave', info, epoch, maxlen)
  return 1
end
"#;

/// ARGV: epoch for a new stream, max length, member, conn, info, lapse ms, max members, key
/// ttl ms. Returns 1 (a new member), 0 (known), -1 (full).
const PRESENCE_JOIN_LUA: &str = r#"
local known = redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1
local new_member = (not known) and redis.call('HEXISTS', KEYS[4], ARGV[3]) == 0
if new_member and redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[7]) then return -1 end
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[4])
if not known then redis.call('HINCRBY', KEYS[4], ARGV[3], 1) end
touch(ARGV[8])
if new_member then
  append('presence.join', ARGV[5], ARGV[1], ARGV[2])
  return 1
end
return 0
"#;

/// ARGV: epoch, max length, conn. Returns 1 when the member left.
const PRESENCE_LEAVE_LUA: &str = r#"
return leave(ARGV[3], ARGV[1], ARGV[2])
"#;

/// ARGV: epoch, max length, now ms. Returns the members that left.
const PRESENCE_SWEEP_LUA: &str = r#"
local gone = 0
for _, conn in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])) do
  gone = gone + leave(conn, ARGV[1], ARGV[2])
end
return gone
"#;

/// Requests in flight at once when a cluster read touches many streams, one request per stream.
const PER_KEY_CONCURRENCY: usize = 64;

/// How a node learns about new entries in the streams it watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TailMode {
    /// Keyspace notifications when the server has them on or lets us turn them on
    /// (`CONFIG SET notify-keyspace-events Kt`), else `XREAD`.
    Auto,
    /// Keyspace notifications; connecting fails when they cannot be enabled.
    Keyspace,
    /// One blocking `XREAD` over every watched stream (not on a Redis Cluster).
    Xread,
}

impl std::str::FromStr for TailMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(TailMode::Auto),
            "keyspace" => Ok(TailMode::Keyspace),
            "xread" => Ok(TailMode::Xread),
            other => Err(format!(
                "unknown tail mode {other:?}; use auto, keyspace or xread"
            )),
        }
    }
}

/// How to reach Redis and how to name keys.
///
/// ```
/// use std::time::Duration;
/// use tidings::{RedisOptions, Retention};
/// let opts = RedisOptions::new("redis://127.0.0.1:6379")
///     .key_prefix("myapp:")
///     .retention(Retention::default().max_len(5000))
///     .timeout(Duration::from_secs(1));
/// assert_eq!(opts.key_prefix, "myapp:");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisOptions {
    /// `redis://host:port/db` (or `rediss://`, `unix://`); for a Redis Cluster, seed URLs
    /// separated by commas, or one `redis+cluster://host:port` (see the module docs).
    pub url: String,
    /// Prefix of every key tidings writes. Default `tidings:`.
    pub key_prefix: String,
    /// History kept per channel.
    pub retention: Retention,
    /// Response timeout for writes and history reads (not for the blocking tail). Default 2 s.
    pub timeout: Duration,
    /// How live entries are found. Default [`TailMode::Auto`].
    pub tail_mode: TailMode,
    /// Appends that may wait for Redis at once (sent, or queued to be); beyond, an append fails
    /// at once with [`StoreError::Busy`]. Default 10,000.
    pub max_pending: usize,
    /// Bytes (event names and payloads) those appends may hold. Default 64 MiB.
    pub max_pending_bytes: usize,
}

impl RedisOptions {
    /// Options for the server at `url`, with defaults for the rest.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            key_prefix: "tidings:".into(),
            retention: Retention::default(),
            timeout: Duration::from_secs(2),
            tail_mode: TailMode::Auto,
            max_pending: 10_000,
            max_pending_bytes: 64 << 20,
        }
    }

    /// Sets [`RedisOptions::max_pending`] and [`RedisOptions::max_pending_bytes`] (each at
    /// least 1).
    pub fn max_pending(mut self, appends: usize, bytes: usize) -> Self {
        self.max_pending = appends.max(1);
        self.max_pending_bytes = bytes.max(1);
        self
    }

    /// Where [`RedisOptions::url`] points, for logs and errors: `host:port` (or the socket path)
    /// of each seed, never a user name or password.
    ///
    /// ```
    /// let opts = tidings::RedisOptions::new("redis://:s3cret@10.0.0.5:6380/2");
    /// assert_eq!(opts.address(), "10.0.0.5:6380");
    /// ```
    pub fn address(&self) -> String {
        use redis::IntoConnectionInfo;
        let Ok(seeds) = cluster::Seeds::parse(&self.url) else {
            return "(no Redis URL)".to_string();
        };
        seeds
            .urls
            .iter()
            .map(|u| match u.as_str().into_connection_info() {
                Ok(info) => info.addr().to_string(),
                Err(_) => "(an invalid URL)".to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Sets [`RedisOptions::tail_mode`].
    pub fn tail_mode(mut self, mode: TailMode) -> Self {
        self.tail_mode = mode;
        self
    }

    /// Sets [`RedisOptions::key_prefix`].
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets [`RedisOptions::retention`].
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets [`RedisOptions::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The command connection: one server's, or a cluster's.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Channels as Redis Streams; several tidings nodes can share one Redis (or one Redis Cluster).
pub struct RedisStore {
    /// The single server (for the `XREAD` tail's own connection); `None` on a cluster.
    client: Option<redis::Client>,
    conn: Conn,
    prefix: String,
    retention: Retention,
    wake_key: String,
    replay: redis::Script,
    gaps: redis::Script,
    position: redis::Script,
    history: redis::Script,
    append: redis::Script,
    presence_join: redis::Script,
    presence_leave: redis::Script,
    presence_sweep: redis::Script,
    tail: tokio::sync::Mutex<TailState>,
    timeout: Duration,
    /// Present in keyspace mode.
    keyspace: Option<keyspace::Listener>,
    /// Keyspace mode: the channels of the previous tail call, to read newly watched ones once.
    known: tokio::sync::Mutex<HashSet<Channel>>,
    /// Keyspace mode: ends a pending tail.
    woken: tokio::sync::Notify,
    /// One server: appends leave in pipelines ([`batch`]). `None` on a cluster, where commands
    /// are routed one by one.
    batcher: Option<batch::Batcher>,
    /// Appends waiting for Redis, bounded.
    pending: Pending,
}

/// Counts the appends waiting for Redis and their bytes, and refuses one more beyond the bounds:
/// a stalled Redis (`CLIENT PAUSE`, a long `DEBUG SLEEP`, a slow fsync) must not turn into a
/// queue that grows until memory runs out.
struct Pending {
    count: std::sync::atomic::AtomicUsize,
    bytes: std::sync::atomic::AtomicUsize,
    max_count: usize,
    max_bytes: usize,
}

/// One append's place among the pending ones; released on drop (the reply came, or the caller
/// gave up).
struct PendingSlot<'a> {
    pending: &'a Pending,
    bytes: usize,
}

impl Pending {
    fn enter(&self, bytes: usize) -> Result<PendingSlot<'_>, StoreError> {
        use std::sync::atomic::Ordering::AcqRel;
        let count = self.count.fetch_add(1, AcqRel) + 1;
        let total = self.bytes.fetch_add(bytes, AcqRel) + bytes;
        let slot = PendingSlot { pending: self, bytes };
        // One append alone is always let through, however large (the payload limit bounds it).
        if count > 1 && (count > self.max_count || total > self.max_bytes) {
            drop(slot);
            return Err(StoreError::Busy {
                waiting: count - 1,
                bytes: total - bytes,
                max_count: self.max_count,
                max_bytes: self.max_bytes,
            });
        }
        Ok(slot)
    }
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::AcqRel;
        self.pending.count.fetch_sub(1, AcqRel);
        self.pending.bytes.fetch_sub(self.bytes, AcqRel);
    }
}

struct TailState {
    conn: Option<MultiplexedConnection>,
    wake_pos: StreamId,
}

impl RedisStore {
    /// Connects to Redis.
    ///
    /// # Errors
    /// [`StoreError::Redis`] when the URL is invalid or Redis cannot be reached in time; on a
    /// cluster also when `XREAD` tailing is asked for or a master's keyspace notifications cannot
    /// be enabled.
    pub async fn connect(opts: RedisOptions) -> Result<RedisStore, StoreError> {
        let seeds = cluster::Seeds::parse(&opts.url)?;
        if seeds.cluster {
            return Self::connect_cluster(&seeds.urls, opts).await;
        }
        let client = redis::Client::open(seeds.urls[0].as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(opts.timeout))
            .set_connection_timeout(Some(opts.timeout))
            .set_number_of_retries(2);
        let mut conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        check_version(&mut conn).await?;
        if cluster::is_cluster_node(&mut conn).await {
            tracing::info!("the Redis server is a cluster node: using it as a cluster seed");
            drop(conn);
            return Self::connect_cluster(&seeds.urls, opts).await;
        }
        let mut conn = Conn::Single(conn);
        // '#' cannot occur in a channel name, so this key never collides with a channel's.
        let wake_key = format!("{}#wake:{}", opts.key_prefix, random_node_id());
        let wake_pos = last_entry_id(&mut conn, &wake_key).await?;
        let keyspace = match opts.tail_mode {
            TailMode::Xread => None,
            mode => match keyspace::enable(&mut conn).await {
                Ok(()) => {
                    let db = client.get_connection_info().redis_settings().db();
                    Some(keyspace::listen(client.clone(), db, &opts.key_prefix, opts.timeout).await?)
                }
                Err(e) if mode == TailMode::Auto => {
                    tracing::warn!(error = %e, "keyspace notifications unavailable; tailing with XREAD");
                    None
                }
                Err(e) => return Err(e),
            },
        };
        tracing::info!(
            tail = if keyspace.is_some() {
                "keyspace notifications"
            } else {
                "XREAD"
            },
            "connected to Redis"
        );
        Ok(Self::assemble(
            Some(client),
            conn,
            opts,
            wake_key,
            wake_pos,
            keyspace,
        ))
    }

    /// Cluster mode: the cluster command connection and one keyspace subscription per master.
    async fn connect_cluster(urls: &[String], opts: RedisOptions) -> Result<RedisStore, StoreError> {
        if opts.tail_mode == TailMode::Xread {
            return Err(cluster::config_error(
                "XREAD tailing (--redis-tail xread) is not available on a Redis Cluster: one blocking XREAD cannot span slots; use keyspace or auto",
                urls.join(","),
            ));
        }
        let (mut conn, template) = cluster::connect(urls, opts.timeout).await?;
        check_version(&mut conn).await?;
        let (keyspace, masters) =
            keyspace::listen_cluster(conn.clone(), template, &opts.key_prefix, opts.timeout).await?;
        tracing::info!(
            masters,
            tail = "keyspace notifications, one subscription per master",
            "connected to Redis Cluster"
        );
        // The wake stream is only used by XREAD tailing.
        let wake_key = String::new();
        Ok(Self::assemble(
            None,
            Conn::Cluster(conn),
            opts,
            wake_key,
            StreamId::ZERO,
            Some(keyspace),
        ))
    }

    fn assemble(
        client: Option<redis::Client>,
        conn: Conn,
        opts: RedisOptions,
        wake_key: String,
        wake_pos: StreamId,
        keyspace: Option<keyspace::Listener>,
    ) -> RedisStore {
        RedisStore {
            client,
            prefix: opts.key_prefix,
            retention: opts.retention,
            wake_key,
            replay: redis::Script::new(&format!("{STATE_LUA}{REPLAY_LUA}")),
            gaps: redis::Script::new(&format!("{STATE_LUA}{GAP_LUA}")),
            position: redis::Script::new(&format!("{STATE_LUA}{POSITION_LUA}")),
            history: redis::Script::new(&format!("{STATE_LUA}{HISTORY_LUA}")),
            append: redis::Script::new(APPEND_LUA),
            presence_join: redis::Script::new(&format!("{PRESENCE_LIB}{PRESENCE_JOIN_LUA}")),
            presence_leave: redis::Script::new(&format!("{PRESENCE_LIB}{PRESENCE_LEAVE_LUA}")),
            presence_sweep: redis::Script::new(&format!("{PRESENCE_LIB}{PRESENCE_SWEEP_LUA}")),
            tail: tokio::sync::Mutex::new(TailState { conn: None, wake_pos }),
            timeout: opts.timeout,
            pending: Pending {
                count: std::sync::atomic::AtomicUsize::new(0),
                bytes: std::sync::atomic::AtomicUsize::new(0),
                max_count: opts.max_pending,
                max_bytes: opts.max_pending_bytes,
            },
            keyspace,
            known: tokio::sync::Mutex::new(HashSet::new()),
            woken: tokio::sync::Notify::new(),
            batcher: match &conn {
                Conn::Single(c) => Some(batch::Batcher::start(c.clone())),
                Conn::Cluster(_) => None,
            },
            conn,
        }
    }

    /// True when connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// The tail mechanism in use ([`TailMode::Keyspace`] or [`TailMode::Xread`]).
    pub fn tail_mode(&self) -> TailMode {
        if self.keyspace.is_some() {
            TailMode::Keyspace
        } else {
            TailMode::Xread
        }
    }

    fn key(&self, channel: &Channel) -> String {
        format!("{}{}", self.prefix, channel.as_str())
    }

    /// The key of an idempotency record: in the stream's hash slot (a Redis Cluster runs a
    /// script only over keys of one slot), so its hash tag is the stream key's own tag, or the
    /// whole stream key when it has none. Channel names hold no braces; a prefix may.
    /// The keys of `channel`'s presence: its stream, then its connections, their lapse times and
    /// the connections per member, all in the stream's hash slot.
    fn presence_keys(&self, channel: &Channel) -> [String; 4] {
        let stream = self.key(&channel.presence());
        let tag = hash_tag(&stream).unwrap_or(&stream).to_string();
        [
            stream,
            format!("{{{tag}}}#conns"),
            format!("{{{tag}}}#lapse"),
            format!("{{{tag}}}#members"),
        ]
    }

    /// An invocation of a presence script on `channel`'s keys, with the epoch and length a new
    /// presence stream gets.
    fn presence_invocation<'s>(
        &self,
        script: &'s redis::Script,
        channel: &Channel,
    ) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        for key in self.presence_keys(channel) {
            invocation.key(key);
        }
        invocation
            .arg(Epoch::random().to_string())
            .arg(self.retention.max_len);
        invocation
    }

    fn idempotency_key(&self, stream_key: &str, key: &str) -> String {
        let tag = hash_tag(stream_key).unwrap_or(stream_key);
        format!("{{{tag}}}#idem:{key}")
    }

    async fn tail_conn(&self, state: &mut TailState) -> Result<MultiplexedConnection, StoreError> {
        if let Some(conn) = &state.conn {
            return Ok(conn.clone());
        }
        let Some(client) = &self.client else {
            return Err(cluster::config_error(
                "XREAD tailing is not available on a Redis Cluster",
                String::new(),
            ));
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(None);
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        state.conn = Some(conn.clone());
        Ok(conn)
    }
}

/// The part of `key` Redis Cluster hashes, when it is not the whole key: what lies between the
/// first `{` and the next `}`, if that is not empty.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let len = key[open + 1..].find('}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

/// Refuses a Redis older than 7.0: trim detection reads `XINFO STREAM` fields 7.0 added. On a
/// cluster `INFO` answers for every node, and every node must do.
async fn check_version(conn: &mut impl redis::aio::ConnectionLike) -> Result<(), StoreError> {
    let info: Value = redis::cmd("INFO").arg("server").query_async(conn).await?;
    let texts: Vec<&Value> = match &info {
        Value::Map(nodes) => nodes.iter().map(|(_, v)| v).collect(),
        one => vec![one],
    };
    for text in texts {
        let text = match text {
            Value::VerbatimString { text, .. } => Some(text.as_str()),
            other => self::text(other),
        };
        let version = text
            .unwrap_or("")
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(str::trim)
            .unwrap_or("");
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 7 {
            return Err(StoreError::Unsupported(format!(
                "Redis {} is too old: tidings needs Redis 7.0 or newer (it reads the XINFO STREAM fields \
                 entries-added and max-deleted-entry-id, which tell it when history was trimmed)",
                if version.is_empty() {
                    "(version unknown)"
                } else {
                    version
                }
            )));
        }
    }
    Ok(())
}

fn random_node_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// The id of the newest entry of the stream at `key` (the wake stream's; its entries carry no
/// event fields, so only ids are read).
async fn last_entry_id(conn: &mut Conn, key: &str) -> Result<StreamId, StoreError> {
    let v: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    match v {
        Value::Array(items) => match items.first() {
            Some(Value::Array(parts)) if !parts.is_empty() => parse_id(key, &parts[0]),
            _ => Ok(StreamId::ZERO),
        },
        _ => Ok(StreamId::ZERO),
    }
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn malformed(channel: &str, id: &str, problem: &str) -> StoreError {
    StoreError::Malformed {
        channel: channel.to_string(),
        id: id.to_string(),
        problem: problem.to_string(),
    }
}

fn parse_id(channel: &str, v: &Value) -> Result<StreamId, StoreError> {
    let s = text(v).ok_or_else(|| malformed(channel, "?", "id is not a string"))?;
    s.parse()
        .map_err(|e: crate::id::ParseIdError| malformed(channel, s, &e.to_string()))
}

/// What `state(key)` (in [`STATE_LUA`]) says about a stream.
struct StreamState {
    last: StreamId,
    max_deleted: StreamId,
    oldest: Option<StreamId>,
    removed: bool,
    epoch: Option<Epoch>,
}

/// Reads an epoch as the scripts return it (`''` for none). A group name that is not an epoch
/// tidings wrote counts as none.
fn parse_epoch(v: &Value) -> Option<Epoch> {
    text(v).and_then(|t| t.parse().ok())
}

impl StreamState {
    /// Parses `[last, max_deleted, first or "", removed, epoch or ""]`.
    fn parse(channel: &str, parts: &[Value]) -> Result<StreamState, StoreError> {
        let [last, max_deleted, first, removed, epoch] = parts else {
            return Err(malformed(channel, "?", "stream state has the wrong length"));
        };
        Ok(StreamState {
            epoch: parse_epoch(epoch),
            last: parse_id(channel, last)?,
            max_deleted: parse_id(channel, max_deleted)?,
            oldest: match text(first) {
                Some("") | None => None,
                Some(_) => Some(parse_id(channel, first)?),
            },
            removed: matches!(removed, Value::Int(1)),
        })
    }

    /// The newest id that may have been removed. `XDEL` records it (`max-deleted-entry-id`);
    /// trimming does not, but removes oldest first, so every trimmed entry is older than the
    /// oldest one held (or, with none held, at most the last). The bound is exact unless the
    /// newest trimmed entry and the oldest held one are more than one id apart, which only ever
    /// makes a cursor at the newest trimmed entry look trimmed: a reset too many, never one too few.
    fn removed_upto(&self) -> StreamId {
        let trimmed = match (self.removed, self.oldest) {
            (false, _) => StreamId::ZERO,
            (true, Some(oldest)) => predecessor(oldest),
            (true, None) => self.last,
        };
        self.max_deleted.max(trimmed)
    }
}

/// The largest id smaller than `id` (`0-0` for `0-0`).
fn predecessor(id: StreamId) -> StreamId {
    match (id.ms, id.seq) {
        (ms, 0) if ms > 0 => StreamId::new(ms - 1, u64::MAX),
        (ms, seq) => StreamId::new(ms, seq.saturating_sub(1)),
    }
}

/// Parses an `XRANGE`-shaped reply: `[[id, [field, value, …]], …]`. An entry without tidings'
/// fields, or whose data is not JSON, keeps its place as [`Entry::unreadable`] (and is logged):
/// readers move past it, so no single entry can stall a channel.
fn parse_entries(channel: &str, v: Value) -> Result<Vec<Entry>, StoreError> {
    let items = match v {
        Value::Array(items) => items,
        Value::Nil => return Ok(Vec::new()),
        _ => return Err(malformed(channel, "?", "reply is not an array")),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else {
            return Err(malformed(channel, "?", "entry is not an array"));
        };
        let [id, Value::Array(fields)] = parts.as_slice() else {
            return Err(malformed(channel, "?", "entry is not [id, fields]"));
        };
        let id = parse_id(channel, id)?;
        let (mut event, mut data) = (None, None);
        for pair in fields.chunks(2) {
            match (text(&pair[0]), pair.get(1).and_then(text)) {
                (Some("e"), Some(v)) => event = Some(v),
                (Some("d"), Some(v)) => data = Some(v),
                _ => {}
            }
        }
        let (Some(event), Some(data)) = (event, data) else {
            super::skip::note(
                channel,
                &id,
                "no field e (event) or d (data): not written by tidings",
            );
            out.push(Entry::unreadable(id));
            continue;
        };
        let Some(data) = crate::envelope::one_line_json(data) else {
            super::skip::note(channel, &id, "field d (data) is not JSON");
            out.push(Entry::unreadable(id));
            continue;
        };
        if event.is_empty() {
            super::skip::note(channel, &id, "field e (event) is empty");
            out.push(Entry::unreadable(id));
            continue;
        }
        out.push(Entry {
            id,
            event: Arc::from(event),
            data: Arc::from(data.as_ref()),
        });
    }
    Ok(out)
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn append<'a>(
        &'a self,
        channel: &'a Channel,
        event: &'a str,
        data: &'a str,
        opts: AppendOptions<'a>,
    ) -> BoxFuture<'a, Result<Appended, StoreError>> {
        async move {
            let _slot = self.pending.enter(event.len() + data.len())?;
            let key = self.key(channel);
            if self.retention.ttl.is_none() && opts.idempotency_key.is_none() {
                // The common case is one pipelined XADD. NOMKSTREAM leaves a missing stream
                // alone: it is created by the script below, with its epoch.
                // Sized up front: at a few hundred thousand appends a second, growing the buffer
                // shows up in profiles.
                let mut xadd = redis::Cmd::with_capacity(11, key.len() + event.len() + data.len() + 58);
                xadd.arg("XADD")
                    .arg(&key)
                    .arg("NOMKSTREAM")
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.retention.max_len)
                    .arg("*")
                    .arg("e")
                    .arg(event)
                    .arg("d")
                    .arg(data);
                let id: Value = match &self.batcher {
                    Some(batcher) => batcher.send(xadd).await?,
                    None => xadd.query_async(&mut self.conn.clone()).await?,
                };
                if id != Value::Nil {
                    return Ok(Appended {
                        id: parse_id(channel.as_str(), &id)?,
                        duplicate: false,
                    });
                }
            }
            let mut invocation = self.append.prepare_invoke();
            invocation.key(&key);
            if let Some(k) = opts.idempotency_key {
                invocation.key(self.idempotency_key(&key, k));
            }
            let ttl_ms = self.retention.ttl.map_or(0, |t| t.as_millis().max(1) as u64);
            invocation
                .arg(Epoch::random().to_string())
                .arg(self.retention.max_len)
                .arg(event)
                .arg(data)
                .arg(ttl_ms)
                .arg(opts.idempotency_window.as_millis().max(1) as u64);
            let reply: Vec<Value> = invocation.invoke_async(&mut self.conn.clone()).await?;
            let [id, duplicate] = reply.as_slice() else {
                return Err(malformed(
                    channel.as_str(),
                    "?",
                    "append reply has the wrong length",
                ));
            };
            Ok(Appended {
                id: parse_id(channel.as_str(), id)?,
                duplicate: matches!(duplicate, Value::Int(1)),
            })
        }
        .boxed()
    }

    fn history<'a>(
        &'a self,
        channel: &'a Channel,
        range: Range,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, StoreError>> {
        async move {
            let (cmd, start, end, reverse) = match range {
                Range::Latest => ("XREVRANGE", "+".to_string(), "-".to_string(), true),
                Range::After(id) => ("XRANGE", format!("({id}"), "+".to_string(), false),
                Range::Before(id) => ("XREVRANGE", format!("({id}"), "-".to_string(), true),
            };
            // `(0-0` and `(<max id>` are errors in Redis; nothing lies beyond either.
            let max = StreamId::new(u64::MAX, u64::MAX);
            if matches!(range, Range::Before(id) if id == StreamId::ZERO)
                || matches!(range, Range::After(id) if id == max)
            {
                let epoch = self.position(channel).await?.epoch;
                return Ok(History {
                    entries: Vec::new(),
                    epoch,
                });
            }
            let v: Value = self
                .history
                .key(self.key(channel))
                .arg(cmd)
                .arg(start)
                .arg(end)
                .arg(limit)
                .invoke_async(&mut self.conn.clone())
                .await?;
            let name = channel.as_str();
            let Value::Array(mut parts) = v else {
                return Err(malformed(name, "?", "history reply is not an array"));
            };
            if parts.len() != 2 {
                return Err(malformed(name, "?", "history reply has the wrong length"));
            }
            let mut entries = parse_entries(name, parts.pop().unwrap_or(Value::Nil))?;
            let epoch = parse_epoch(&parts[0]);
            if reverse {
                entries.reverse();
            }
            Ok(History { entries, epoch })
        }
        .boxed()
    }

    fn replay<'a>(
        &'a self,
        channel: &'a Channel,
        after: Position,
        limit: usize,
    ) -> BoxFuture<'a, Result<Replay, StoreError>> {
        async move {
            let v: Value = self
                .replay
                .key(self.key(channel))
                .arg(after.id.to_string())
                .arg(limit)
                .arg(after.epoch.map_or(String::new(), |e| e.to_string()))
                .invoke_async(&mut self.conn.clone())
                .await?;
            let name = channel.as_str();
            let Value::Array(mut parts) = v else {
                return Err(malformed(name, "?", "replay reply is not an array"));
            };
            if parts.len() == 1 {
                return Ok(Replay::no_stream(after));
            }
            if parts.len() != 6 {
                return Err(malformed(name, "?", "replay reply has the wrong length"));
            }
            let page = parts.pop().unwrap_or(Value::Nil);
            let state = StreamState::parse(name, &parts)?;
            let trimmed = check_resume(after, state.epoch, state.last, state.oldest, state.removed_upto());
            Ok(Replay {
                entries: parse_entries(name, page)?,
                trimmed,
                epoch: state.epoch,
            })
        }
        .boxed()
    }

    fn position<'a>(&'a self, channel: &'a Channel) -> BoxFuture<'a, Result<Position, StoreError>> {
        async move {
            let v: Vec<Value> = self
                .position
                .key(self.key(channel))
                .invoke_async(&mut self.conn.clone())
                .await?;
            match v.as_slice() {
                [] => Ok(Position::ZERO),
                [id, epoch] => Ok(Position::new(parse_id(channel.as_str(), id)?, parse_epoch(epoch))),
                _ => Err(malformed(
                    channel.as_str(),
                    "?",
                    "position reply has the wrong length",
                )),
            }
        }
        .boxed()
    }

    fn tail<'a>(
        &'a self,
        positions: &'a [(Channel, Position)],
        wait: Duration,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<TailBatch>, StoreError>> {
        async move {
            if let Some(ks) = &self.keyspace {
                return self.tail_keyspace(ks, positions, wait, count).await;
            }
            let mut state = self.tail.lock().await;
            let mut conn = self.tail_conn(&mut state).await?;
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT").arg(count.max(1));
            // BLOCK 0 would mean "forever".
            cmd.arg("BLOCK").arg(wait.as_millis().max(1) as u64);
            cmd.arg("STREAMS");
            for (channel, _) in positions {
                cmd.arg(self.key(channel));
            }
            cmd.arg(&self.wake_key);
            for (_, pos) in positions {
                cmd.arg(pos.id.to_string());
            }
            cmd.arg(state.wake_pos.to_string());
            let reply: Value = match cmd.query_async(&mut conn).await {
                Ok(v) => v,
                Err(e) => {
                    // Reconnect next time: the connection may be stuck mid-reply.
                    state.conn = None;
                    return Err(e.into());
                }
            };
            let streams = match reply {
                Value::Nil => return Ok(Vec::new()),
                Value::Array(streams) => streams,
                Value::Map(pairs) => pairs.into_iter().map(|(k, v)| Value::Array(vec![k, v])).collect(),
                _ => return Err(malformed("*", "?", "XREAD reply is not an array")),
            };
            let index: HashMap<&str, usize> = positions
                .iter()
                .enumerate()
                .map(|(i, (c, _))| (c.as_str(), i))
                .collect();
            let mut batches = Vec::new();
            for stream in streams {
                let Value::Array(mut kv) = stream else { continue };
                if kv.len() != 2 {
                    continue;
                }
                let entries_v = kv.pop().unwrap_or(Value::Nil);
                let Some(key) = text(&kv[0]).map(str::to_owned) else {
                    continue;
                };
                if key == self.wake_key {
                    // Wake entries carry no event fields (`w 1`): only their id matters, so they
                    // must not go through `parse_entries`, which would call them malformed.
                    if let Value::Array(items) = &entries_v {
                        if let Some(Value::Array(parts)) = items.last() {
                            if let Some(id) = parts.first() {
                                state.wake_pos = parse_id(&key, id)?;
                            }
                        }
                    }
                    continue;
                }
                let Some(&i) = key.strip_prefix(&self.prefix).and_then(|name| index.get(name)) else {
                    continue;
                };
                let (channel, pos) = &positions[i];
                let entries = parse_entries(channel.as_str(), entries_v)?;
                if !entries.is_empty() {
                    batches.push(TailBatch {
                        channel: channel.clone(),
                        entries,
                        epoch: pos.epoch,
                        gap: false,
                    });
                }
            }
            drop(state);
            self.check_gaps(positions, &index, &mut batches).await?;
            Ok(batches)
        }
        .boxed()
    }

    fn wake(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            if self.keyspace.is_some() {
                self.woken.notify_one();
                return Ok(());
            }
            let mut conn = self.conn.clone();
            redis::pipe()
                .cmd("XADD")
                .arg(&self.wake_key)
                .arg("MAXLEN")
                .arg(1)
                .arg("*")
                .arg("w")
                .arg(1)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&self.wake_key)
                .arg(3_600_000)
                .ignore()
                .query_async::<()>(&mut conn)
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let mut conn = self.conn.clone();
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            Ok(())
        }
        .boxed()
    }

    fn presence_join<'a>(
        &'a self,
        channel: &'a Channel,
        join: PresenceJoin<'a>,
    ) -> BoxFuture<'a, Result<Joined, StoreError>> {
        async move {
            let mut invocation = self.presence_invocation(&self.presence_join, channel);
            // The state outlives every lapse by far: abandoned state (every node gone) expires.
            let ttl_ms = join.until_ms.saturating_sub(now_ms()).max(1000) * 4;
            invocation
                .arg(join.member)
                .arg(join.conn)
                .arg(join.info)
                .arg(join.until_ms)
                .arg(join.max_members.min(i64::MAX as usize))
                .arg(ttl_ms);
            let joined: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
            Ok(match joined {
                1 => Joined::First,
                0 => Joined::Again,
                _ => Joined::Full,
            })
        }
        .boxed()
    }

    fn presence_leave<'a>(
        &'a self,
        channel: &'a Channel,
        conn: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        async move {
            let mut invocation = self.presence_invocation(&self.presence_leave, channel);
            invocation.arg(conn);
            let left: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
            Ok(left == 1)
        }
        .boxed()
    }

    fn presence_refresh<'a>(
        &'a self,
        channel: &'a Channel,
        conns: &'a [String],
        until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        async move {
            if conns.is_empty() {
                return Ok(());
            }
            let [_, conns_key, lapse, members] = self.presence_keys(channel);
            let ttl_ms = until_ms.saturating_sub(now_ms()).max(1000) * 4;
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(&lapse).arg("XX");
            for conn in conns {
                zadd.arg(until_ms).arg(conn);
            }
            // One slot: a pipeline is routed to it whole, on a cluster too.
            let mut pipe = redis::pipe();
            pipe.add_command(zadd).ignore();
            for key in [&conns_key, &lapse, &members] {
                pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms).ignore();
            }
            pipe.query_async::<()>(&mut self.conn.clone()).await?;
            Ok(())
        }
        .boxed()
    }

    fn presence_sweep<'a>(
        &'a self,
        channel: &'a Channel,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        async move {
            let mut invocation = self.presence_invocation(&self.presence_sweep, channel);
            invocation.arg(now_ms);
            let gone: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
            Ok(gone.max(0) as usize)
        }
        .boxed()
    }

    fn presence_members<'a>(
        &'a self,
        channel: &'a Channel,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        async move {
            let [_, conns_key, _, _] = self.presence_keys(channel);
            let infos: Vec<String> = redis::cmd("HVALS")
                .arg(&conns_key)
                .query_async(&mut self.conn.clone())
                .await?;
            Ok(infos)
        }
        .boxed()
    }
}

impl RedisStore {
    /// Marks batches that may not follow on from their position. If the entry at the position
    /// is still there, nothing after it was trimmed before the read (trimming removes oldest
    /// first). Otherwise [`StreamState::removed_upto`] decides; it may also count entries trimmed
    /// after the read, so a gap can be reported that was not one: the caller then
    /// re-reads from its own cursor, which answers exactly.
    async fn check_gaps(
        &self,
        positions: &[(Channel, Position)],
        index: &HashMap<&str, usize>,
        batches: &mut [TailBatch],
    ) -> Result<(), StoreError> {
        if batches.is_empty() {
            return Ok(());
        }
        let starts: Vec<StreamId> = batches
            .iter()
            .map(|batch| positions[index[batch.channel.as_str()]].1.id)
            .collect();
        let states: Vec<Value> = match &self.conn {
            Conn::Single(_) => {
                let mut invocation = self.gaps.prepare_invoke();
                for (batch, pos) in batches.iter().zip(&starts) {
                    invocation.key(self.key(&batch.channel)).arg(pos.to_string());
                }
                let mut conn = self.conn.clone();
                invocation.invoke_async(&mut conn).await?
            }
            // One script per stream: a script's keys must share a slot.
            Conn::Cluster(cluster) => {
                // Boxed and collected: the futures then have one nameable type, which keeps the
                // `tail` future provably `Send`.
                let calls: Vec<BoxFuture<'_, Result<Value, StoreError>>> = batches
                    .iter()
                    .zip(&starts)
                    .map(|(batch, pos)| {
                        let mut conn = cluster.clone();
                        let key = self.key(&batch.channel);
                        let pos = pos.to_string();
                        let gaps = &self.gaps;
                        async move {
                            let mut invocation = gaps.prepare_invoke();
                            invocation.key(key).arg(pos);
                            let mut one: Vec<Value> = invocation.invoke_async(&mut conn).await?;
                            Ok(one.pop().unwrap_or(Value::Nil))
                        }
                        .boxed()
                    })
                    .collect();
                futures_util::stream::iter(calls)
                    .buffered(PER_KEY_CONCURRENCY)
                    .try_collect()
                    .await?
            }
        };
        for ((batch, pos), state) in batches.iter_mut().zip(starts).zip(states) {
            // `{0}`: the entry at the position is still there, so the batch follows on from it
            // in the same history, and keeps the epoch it was given.
            if let Value::Array(parts) = state {
                if parts.len() == 5 {
                    let state = StreamState::parse(batch.channel.as_str(), &parts)?;
                    batch.gap = state.removed_upto() > pos;
                    batch.epoch = state.epoch;
                }
            }
        }
        Ok(())
    }
}

impl RedisStore {
    /// Runs single-key commands and returns their replies in order: in one pipeline on a single
    /// server; on a cluster as separate requests, a few at a time (a pipeline is sent to one node,
    /// and its commands may belong to any).
    async fn query_each(&self, cmds: Vec<redis::Cmd>) -> Result<Vec<Value>, StoreError> {
        match &self.conn {
            Conn::Single(_) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd);
                }
                let mut conn = self.conn.clone();
                Ok(pipe.query_async(&mut conn).await?)
            }
            Conn::Cluster(cluster) => {
                let calls: Vec<BoxFuture<'static, redis::RedisResult<Value>>> = cmds
                    .into_iter()
                    .map(|cmd| {
                        let mut conn = cluster.clone();
                        async move { cmd.query_async::<Value>(&mut conn).await }.boxed()
                    })
                    .collect();
                Ok(futures_util::stream::iter(calls)
                    .buffered(PER_KEY_CONCURRENCY)
                    .try_collect()
                    .await?)
            }
        }
    }

    /// [`Store::tail`] in keyspace mode: read the watched channels that notifications marked,
    /// channels watched for the first time, and after a full wait every channel.
    async fn tail_keyspace(
        &self,
        ks: &keyspace::Listener,
        positions: &[(Channel, Position)],
        wait: Duration,
        count: usize,
    ) -> Result<Vec<TailBatch>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut fresh: Vec<usize> = {
            let mut known = self.known.lock().await;
            let fresh: Vec<usize> = (0..positions.len())
                .filter(|&i| !known.contains(&positions[i].0))
                .collect();
            if !fresh.is_empty() || known.len() != positions.len() {
                *known = positions.iter().map(|(c, _)| c.clone()).collect();
            }
            fresh
        };
        loop {
            let changed = ks.signals.changed.notified();
            let woken = self.woken.notified();
            tokio::pin!(changed, woken);
            changed.as_mut().enable();
            let (dirty, sweep) = ks.signals.take();
            let targets: Vec<usize> = if sweep {
                (0..positions.len()).collect()
            } else {
                let mut t = std::mem::take(&mut fresh);
                t.extend((0..positions.len()).filter(|&i| dirty.contains(positions[i].0.as_str())));
                t.sort_unstable();
                t.dedup();
                t
            };
            if !targets.is_empty() {
                let batches = self
                    .read_positions(positions, &targets, count, &ks.signals)
                    .await?;
                if !batches.is_empty() {
                    return Ok(batches);
                }
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = &mut woken => return Ok(Vec::new()),
                _ = tokio::time::sleep_until(deadline) => {
                    // A notification may have been lost: look at everything once per wait.
                    let all: Vec<usize> = (0..positions.len()).collect();
                    return self.read_positions(positions, &all, count, &ks.signals).await;
                }
            }
        }
    }

    /// Reads the entries after the positions `targets` names, in one pipeline. Each read starts
    /// *at* its position: when that entry is still there, nothing after it was trimmed and the
    /// batch is contiguous; otherwise the trim state decides ([`RedisStore::check_gaps`]).
    async fn read_positions(
        &self,
        positions: &[(Channel, Position)],
        targets: &[usize],
        count: usize,
        signals: &keyspace::Signals,
    ) -> Result<Vec<TailBatch>, StoreError> {
        let count = count.max(1);
        let mut reads = Vec::with_capacity(targets.len());
        for &i in targets {
            let (channel, pos) = &positions[i];
            let pos = &pos.id;
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(self.key(channel));
            if *pos == StreamId::ZERO {
                cmd.arg("-").arg("+").arg("COUNT").arg(count);
            } else {
                cmd.arg(pos.to_string()).arg("+").arg("COUNT").arg(count + 1);
            }
            reads.push(cmd);
        }
        let replies = self.query_each(reads).await?;
        let mut batches = Vec::new();
        let mut suspects = Vec::new();
        for (&i, reply) in targets.iter().zip(replies) {
            let (channel, start) = &positions[i];
            let pos = &start.id;
            let mut entries = parse_entries(channel.as_str(), reply)?;
            let contiguous = *pos != StreamId::ZERO && entries.first().map(|e| e.id) == Some(*pos);
            if contiguous {
                entries.remove(0);
            }
            if entries.len() >= count {
                signals.mark(channel.as_str()); // more may follow: read on next time
            }
            if entries.is_empty() {
                continue;
            }
            let batch = TailBatch {
                channel: channel.clone(),
                entries,
                epoch: start.epoch,
                gap: false,
            };
            if contiguous {
                batches.push(batch);
            } else {
                suspects.push(batch);
            }
        }
        if !suspects.is_empty() {
            let index: HashMap<&str, usize> = positions
                .iter()
                .enumerate()
                .map(|(i, (c, _))| (c.as_str(), i))
                .collect();
            self.check_gaps(positions, &index, &mut suspects).await?;
            batches.append(&mut suspects);
        }
        Ok(batches)
    }
}
