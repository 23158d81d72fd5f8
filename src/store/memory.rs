//! The embedded store: Redis Stream semantics in process memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    check_resume, AppendOptions, Appended, Entry, History, Joined, PresenceJoin, Range, Replay, Retention,
    Store, StoreError, TailBatch, PRESENCE_JOIN, PRESENCE_LEAVE,
};
use crate::channel::Channel;
use crate::id::{Epoch, Position, StreamId};

const SHARDS: usize = 32;

/// Channels in process memory, with the same ids, trimming and resume answers as Redis.
///
/// Nothing survives a restart of the process; for that, and for several nodes, use
/// [`RedisStore`](super::RedisStore).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use tidings::{Channel, MemoryStore, Retention, Store};
/// let store = MemoryStore::new(Retention::default().max_len(100));
/// let room = Channel::new("room:1").unwrap();
/// let opts = tidings::store::AppendOptions::default();
/// let added = store.append(&room, "chat.message", r#"{"text":"hi"}"#, opts).await.unwrap();
/// assert_eq!(store.position(&room).await.unwrap().id, added.id);
/// # });
/// ```
pub struct MemoryStore {
    shards: Box<[Mutex<HashMap<Channel, Stream>>]>,
    retention: Retention,
    appended: Notify,
    woken: Notify,
    /// Who is present, per channel.
    presence: Mutex<HashMap<Channel, Present>>,
}

/// One channel's presence: its connections, and how many each member has.
#[derive(Default)]
struct Present {
    /// Connection → (member, info, lapses at ms).
    conns: HashMap<Box<str>, (Box<str>, Box<str>, u64)>,
    members: HashMap<Box<str>, usize>,
}

impl Present {
    /// Removes `conn`; returns the member's info when it was the member's last connection.
    fn remove(&mut self, conn: &str) -> Option<Box<str>> {
        let (member, info, _) = self.conns.remove(conn)?;
        let n = self.members.get_mut(&member)?;
        *n -= 1;
        if *n == 0 {
            self.members.remove(&member);
            return Some(info);
        }
        None
    }
}

struct Stream {
    entries: VecDeque<Entry>,
    last_id: StreamId,
    max_deleted: StreamId,
    expires_at: Option<Instant>,
    /// Chosen when the stream is created: a stream created again (after a restart or expiry)
    /// is another history.
    epoch: Epoch,
    /// Idempotency keys seen within their window, and the ids they stored.
    keys: HashMap<Box<str>, StreamId>,
    /// The same keys by expiry, oldest first, to forget them in order.
    key_expiry: VecDeque<(Instant, Box<str>)>,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            entries: VecDeque::new(),
            last_id: StreamId::ZERO,
            max_deleted: StreamId::ZERO,
            expires_at: None,
            epoch: Epoch::random(),
            keys: HashMap::new(),
            key_expiry: VecDeque::new(),
        }
    }

    fn forget_keys(&mut self, now: Instant) {
        while let Some((at, _)) = self.key_expiry.front() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.key_expiry.pop_front() {
                self.keys.remove(&key);
            }
        }
    }

    fn position(&self) -> Position {
        let id = self.entries.back().map_or(StreamId::ZERO, |e| e.id);
        Position::new(id, Some(self.epoch))
    }

    /// Index of the first entry with an id greater than `id`.
    fn after(&self, id: StreamId) -> usize {
        self.entries.partition_point(|e| e.id <= id)
    }

    fn slice(&self, from: usize, limit: usize) -> Vec<Entry> {
        self.entries.iter().skip(from).take(limit).cloned().collect()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl MemoryStore {
    /// An empty store keeping history as `retention` says.
    pub fn new(retention: Retention) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            retention,
            appended: Notify::new(),
            woken: Notify::new(),
            presence: Mutex::new(HashMap::new()),
        }
    }

    fn present(&self) -> MutexGuard<'_, HashMap<Channel, Present>> {
        // Every update leaves the maps consistent between statements.
        self.presence.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shard(&self, channel: &Channel) -> MutexGuard<'_, HashMap<Channel, Stream>> {
        use std::hash::BuildHasher;
        // A fixed hasher: shard choice only needs to be stable within the process.
        let hasher = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let i = (hasher.hash_one(channel) as usize) % self.shards.len();
        // A panic while holding the lock cannot leave a stream half-updated (every update is a
        // push or a pop), so a poisoned lock is still safe to use.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the channel's stream when it exists and has not expired.
    fn with_stream<T>(&self, channel: &Channel, f: impl FnOnce(Option<&Stream>) -> T) -> T {
        let mut shard = self.shard(channel);
        let expired =
            matches!(shard.get(channel), Some(s) if s.expires_at.is_some_and(|t| t <= Instant::now()));
        if expired {
            shard.remove(channel);
        }
        f(shard.get(channel))
    }

    fn append_now(&self, channel: &Channel, event: &str, data: &str, opts: AppendOptions<'_>) -> Appended {
        let mut shard = self.shard(channel);
        let now = Instant::now();
        if shard
            .get(channel)
            .is_some_and(|s| s.expires_at.is_some_and(|t| t <= now))
        {
            shard.remove(channel);
        }
        let stream = shard.entry(channel.clone()).or_insert_with(Stream::new);
        if let Some(key) = opts.idempotency_key {
            stream.forget_keys(now);
            if let Some(&id) = stream.keys.get(key) {
                return Appended { id, duplicate: true };
            }
        }
        let ms = now_ms();
        let id = if ms > stream.last_id.ms {
            StreamId::new(ms, 0)
        } else {
            stream.last_id.successor()
        };
        stream.last_id = id;
        stream.entries.push_back(Entry {
            id,
            event: Arc::from(event),
            data: Arc::from(data),
        });
        while stream.entries.len() > self.retention.max_len {
            if let Some(old) = stream.entries.pop_front() {
                stream.max_deleted = old.id;
            }
        }
        stream.expires_at = self.retention.ttl.map(|ttl| now + ttl);
        if let Some(key) = opts.idempotency_key {
            stream.keys.insert(key.into(), id);
            stream
                .key_expiry
                .push_back((now + opts.idempotency_window, key.into()));
        }
        drop(shard);
        self.appended.notify_waiters();
        Appended { id, duplicate: false }
    }

    fn tail_now(&self, positions: &[(Channel, Position)], count: usize) -> Vec<TailBatch> {
        let mut found = Vec::new();
        for (channel, pos) in positions {
            self.with_stream(channel, |stream| {
                let Some(stream) = stream else { return };
                // A position given by id alone is read by id alone, as on Redis.
                let other_epoch = pos.id > StreamId::ZERO && pos.epoch.is_some_and(|e| e != stream.epoch);
                if stream.last_id <= pos.id && !other_epoch {
                    return;
                }
                let from = if other_epoch { 0 } else { stream.after(pos.id) };
                let entries = stream.slice(from, count);
                if !entries.is_empty() {
                    found.push(TailBatch {
                        channel: channel.clone(),
                        entries,
                        epoch: Some(stream.epoch),
                        gap: other_epoch || stream.max_deleted > pos.id,
                    });
                }
            });
        }
        found
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(Retention::default())
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn append<'a>(
        &'a self,
        channel: &'a Channel,
        event: &'a str,
        data: &'a str,
        opts: AppendOptions<'a>,
    ) -> BoxFuture<'a, Result<Appended, StoreError>> {
        let added = self.append_now(channel, event, data, opts);
        async move { Ok(added) }.boxed()
    }

    fn history<'a>(
        &'a self,
        channel: &'a Channel,
        range: Range,
        limit: usize,
    ) -> BoxFuture<'a, Result<History, StoreError>> {
        let history = self.with_stream(channel, |stream| {
            let Some(s) = stream else {
                return History {
                    entries: Vec::new(),
                    epoch: None,
                };
            };
            let entries = match range {
                Range::Latest => s.slice(s.entries.len().saturating_sub(limit), limit),
                Range::After(id) => s.slice(s.after(id), limit),
                Range::Before(id) => {
                    let end = s.entries.partition_point(|e| e.id < id);
                    let start = end.saturating_sub(limit);
                    s.slice(start, end - start)
                }
            };
            History {
                entries,
                epoch: Some(s.epoch),
            }
        });
        async move { Ok(history) }.boxed()
    }

    fn replay<'a>(
        &'a self,
        channel: &'a Channel,
        after: Position,
        limit: usize,
    ) -> BoxFuture<'a, Result<Replay, StoreError>> {
        let replay = self.with_stream(channel, |stream| match stream {
            None => Replay::no_stream(after),
            Some(s) => {
                let oldest = s.entries.front().map(|e| e.id);
                let trimmed = check_resume(after, Some(s.epoch), s.last_id, oldest, s.max_deleted);
                let from = trimmed.as_ref().map_or(after.id, |t| t.resume_from);
                Replay {
                    entries: s.slice(s.after(from), limit),
                    trimmed,
                    epoch: Some(s.epoch),
                }
            }
        });
        async move { Ok(replay) }.boxed()
    }

    fn position<'a>(&'a self, channel: &'a Channel) -> BoxFuture<'a, Result<Position, StoreError>> {
        let pos = self.with_stream(channel, |s| s.map_or(Position::ZERO, Stream::position));
        async move { Ok(pos) }.boxed()
    }

    fn tail<'a>(
        &'a self,
        positions: &'a [(Channel, Position)],
        wait: Duration,
        count: usize,
    ) -> BoxFuture<'a, Result<Vec<TailBatch>, StoreError>> {
        async move {
            let deadline = Instant::now() + wait;
            loop {
                // Register interest before looking, so an append between the look and the wait
                // still wakes us.
                let appended = self.appended.notified();
                tokio::pin!(appended);
                appended.as_mut().enable();
                let found = self.tail_now(positions, count);
                if !found.is_empty() {
                    return Ok(found);
                }
                tokio::select! {
                    _ = &mut appended => {}
                    _ = self.woken.notified() => return Ok(Vec::new()),
                    _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                }
            }
        }
        .boxed()
    }

    fn wake(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.woken.notify_one();
        async { Ok(()) }.boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async { Ok(()) }.boxed()
    }

    fn presence_join<'a>(
        &'a self,
        channel: &'a Channel,
        join: PresenceJoin<'a>,
    ) -> BoxFuture<'a, Result<Joined, StoreError>> {
        let joined = {
            let mut all = self.present();
            let p = all.entry(channel.clone()).or_default();
            let known = p.conns.contains_key(join.conn);
            let new_member = !known && !p.members.contains_key(join.member);
            if new_member && p.members.len() >= join.max_members {
                Joined::Full
            } else {
                p.conns.insert(
                    join.conn.into(),
                    (join.member.into(), join.info.into(), join.until_ms),
                );
                if !known {
                    *p.members.entry(join.member.into()).or_default() += 1;
                }
                if new_member {
                    // Under the presence lock, so joins and leaves are written in the order
                    // they happened.
                    let opts = AppendOptions::default();
                    self.append_now(&channel.presence(), PRESENCE_JOIN, join.info, opts);
                    Joined::First
                } else {
                    Joined::Again
                }
            }
        };
        async move { Ok(joined) }.boxed()
    }

    fn presence_leave<'a>(
        &'a self,
        channel: &'a Channel,
        conn: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let left = {
            let mut all = self.present();
            let gone = all.get_mut(channel).and_then(|p| p.remove(conn));
            if let Some(info) = &gone {
                self.append_now(
                    &channel.presence(),
                    PRESENCE_LEAVE,
                    info,
                    AppendOptions::default(),
                );
            }
            if all.get(channel).is_some_and(|p| p.conns.is_empty()) {
                all.remove(channel);
            }
            gone.is_some()
        };
        async move { Ok(left) }.boxed()
    }

    fn presence_refresh<'a>(
        &'a self,
        channel: &'a Channel,
        conns: &'a [String],
        until_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        if let Some(p) = self.present().get_mut(channel) {
            for conn in conns {
                if let Some(c) = p.conns.get_mut(conn.as_str()) {
                    c.2 = until_ms;
                }
            }
        }
        async { Ok(()) }.boxed()
    }

    fn presence_sweep<'a>(
        &'a self,
        channel: &'a Channel,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        let gone = {
            let mut all = self.present();
            let mut gone = 0;
            if let Some(p) = all.get_mut(channel) {
                let lapsed: Vec<Box<str>> = p
                    .conns
                    .iter()
                    .filter(|(_, c)| c.2 <= now_ms)
                    .map(|(k, _)| k.clone())
                    .collect();
                for conn in lapsed {
                    if let Some(info) = p.remove(&conn) {
                        self.append_now(
                            &channel.presence(),
                            PRESENCE_LEAVE,
                            &info,
                            AppendOptions::default(),
                        );
                        gone += 1;
                    }
                }
                if p.conns.is_empty() {
                    all.remove(channel);
                }
            }
            gone
        };
        async move { Ok(gone) }.boxed()
    }

    fn presence_members<'a>(
        &'a self,
        channel: &'a Channel,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        let infos = self.present().get(channel).map_or_else(Vec::new, |p| {
            p.conns.values().map(|(_, info, _)| info.to_string()).collect()
        });
        async move { Ok(infos) }.boxed()
    }
}
