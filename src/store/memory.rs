//! The embedded store: Redis Stream semantics in process memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Entry, Range, Replay, Retention, Store, StoreError, TailBatch, Trimmed};
use crate::channel::Channel;
use crate::id::StreamId;

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
/// let id = store.append(&room, "chat.message", r#"{"text":"hi"}"#).await.unwrap();
/// assert_eq!(store.last_id(&room).await.unwrap(), id);
/// # });
/// ```
pub struct MemoryStore {
    shards: Box<[Mutex<HashMap<Channel, Stream>>]>,
    retention: Retention,
    appended: Notify,
    woken: Notify,
}

#[derive(Default)]
struct Stream {
    entries: VecDeque<Entry>,
    last_id: StreamId,
    max_deleted: StreamId,
    expires_at: Option<Instant>,
}

impl Stream {
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
        }
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

    fn append_now(&self, channel: &Channel, event: &str, data: &str) -> StreamId {
        let mut shard = self.shard(channel);
        let now = Instant::now();
        if shard
            .get(channel)
            .is_some_and(|s| s.expires_at.is_some_and(|t| t <= now))
        {
            shard.remove(channel);
        }
        let stream = shard.entry(channel.clone()).or_default();
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
        drop(shard);
        self.appended.notify_waiters();
        id
    }

    fn tail_now(&self, positions: &[(Channel, StreamId)], count: usize) -> Vec<TailBatch> {
        let mut found = Vec::new();
        for (channel, pos) in positions {
            self.with_stream(channel, |stream| {
                let Some(stream) = stream else { return };
                if stream.last_id <= *pos {
                    return;
                }
                let from = stream.after(*pos);
                let entries = stream.slice(from, count);
                if !entries.is_empty() {
                    found.push(TailBatch {
                        channel: channel.clone(),
                        entries,
                        gap: stream.max_deleted > *pos,
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
    ) -> BoxFuture<'a, Result<StreamId, StoreError>> {
        let id = self.append_now(channel, event, data);
        async move { Ok(id) }.boxed()
    }

    fn history<'a>(
        &'a self,
        channel: &'a Channel,
        range: Range,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Entry>, StoreError>> {
        let entries = self.with_stream(channel, |stream| {
            let Some(s) = stream else { return Vec::new() };
            match range {
                Range::Latest => s.slice(s.entries.len().saturating_sub(limit), limit),
                Range::After(id) => s.slice(s.after(id), limit),
                Range::Before(id) => {
                    let end = s.entries.partition_point(|e| e.id < id);
                    let start = end.saturating_sub(limit);
                    s.slice(start, end - start)
                }
            }
        });
        async move { Ok(entries) }.boxed()
    }

    fn replay<'a>(
        &'a self,
        channel: &'a Channel,
        after: StreamId,
        limit: usize,
    ) -> BoxFuture<'a, Result<Replay, StoreError>> {
        let replay = self.with_stream(channel, |stream| match stream {
            None => Replay {
                entries: Vec::new(),
                trimmed: (after > StreamId::ZERO).then_some(Trimmed {
                    oldest: None,
                    resume_from: after,
                }),
            },
            Some(s) => {
                let oldest = s.entries.front().map(|e| e.id);
                let trimmed = if after > s.last_id {
                    Some(Trimmed {
                        oldest,
                        resume_from: s.last_id,
                    })
                } else if s.max_deleted > after {
                    Some(Trimmed {
                        oldest,
                        resume_from: s.max_deleted,
                    })
                } else {
                    None
                };
                let from = trimmed.as_ref().map_or(after, |t| t.resume_from);
                Replay {
                    entries: s.slice(s.after(from), limit),
                    trimmed,
                }
            }
        });
        async move { Ok(replay) }.boxed()
    }

    fn last_id<'a>(&'a self, channel: &'a Channel) -> BoxFuture<'a, Result<StreamId, StoreError>> {
        let id = self.with_stream(channel, |s| {
            s.and_then(|s| s.entries.back()).map_or(StreamId::ZERO, |e| e.id)
        });
        async move { Ok(id) }.boxed()
    }

    fn tail<'a>(
        &'a self,
        positions: &'a [(Channel, StreamId)],
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
}
