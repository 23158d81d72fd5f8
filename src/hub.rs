//! Fan-out inside a node: one reader for all watched channels, a bounded queue per subscriber.
//!
//! SSE connections never talk to the store for live events. The hub keeps, for every channel
//! that at least one local subscriber watches, the id of the last entry it has handed out, and a
//! single task tails the store from those positions ([`Store::tail`]) and copies each new entry
//! into the queue of every subscriber of its channel. A subscriber whose queue is full is dropped
//! from every channel at once and told it lagged; it resumes from its cursor and loses nothing.
//!
//! Gap-free hand-over: a subscriber registers first and learns each channel's position at that
//! moment; it then reads history up to at least that position itself. Entries after it arrive in
//! its queue. The two overlap at most, and the overlap is dropped by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::channel::Channel;
use crate::id::StreamId;
use crate::store::{Entry, Store, StoreError, TailBatch};

/// How long one tail call blocks when nothing happens.
const TAIL_WAIT: Duration = Duration::from_secs(5);
/// Entries read per channel per tail call.
const TAIL_COUNT: usize = 512;

/// One new entry, shared by every subscriber that receives it.
pub(crate) struct Delivery {
    pub channel: Channel,
    pub entry: Entry,
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<Delivery>>,
    channels: Vec<Channel>,
    /// Set when the hub dropped this subscriber (queue full, or a possible gap in the tail).
    kicked: Arc<AtomicBool>,
}

struct Watched {
    /// The last entry handed out for this channel.
    pos: StreamId,
    subs: Vec<Arc<Subscriber>>,
}

struct Inner {
    store: Arc<dyn Store>,
    channels: Mutex<HashMap<Channel, Watched>>,
    /// Serializes subscribe and the removal of unwatched channels, so a channel is never removed
    /// while a subscriber is between looking it up and registering on it.
    registry: tokio::sync::Mutex<()>,
    queue: usize,
    next_id: AtomicU64,
}

/// The fan-out of one node.
#[derive(Clone)]
pub(crate) struct Hub {
    inner: Arc<Inner>,
}

/// A registration with the hub; dropping it unregisters.
///
/// Only the hub's lists hold the sending side of `rx`: once the hub drops this subscriber from
/// every channel, `rx` ends after the entries it already holds.
pub(crate) struct Subscription {
    hub: Arc<Inner>,
    id: u64,
    channels: Vec<Channel>,
    kicked: Arc<AtomicBool>,
    /// New entries, in order per channel.
    pub rx: mpsc::Receiver<Arc<Delivery>>,
    /// Each channel's position when the subscription started: every later entry arrives in `rx`.
    pub start: Vec<(Channel, StreamId)>,
}

impl Subscription {
    /// True when the hub dropped this subscriber; `rx` then ends after what it already holds.
    pub fn kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut map = lock(&self.hub.channels);
        for channel in &self.channels {
            if let Some(w) = map.get_mut(channel) {
                w.subs.retain(|s| s.id != self.id);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the map consistent between statements, so a poisoned lock
    // (a panic elsewhere) is safe to keep using.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// Starts the hub's tail task on the current runtime. `queue` bounds each subscriber's queue.
    pub fn start(store: Arc<dyn Store>, queue: usize) -> Hub {
        let inner = Arc::new(Inner {
            store,
            channels: Mutex::new(HashMap::new()),
            registry: tokio::sync::Mutex::new(()),
            queue: queue.max(1),
            next_id: AtomicU64::new(1),
        });
        tokio::spawn(tail_loop(Arc::downgrade(&inner)));
        Hub { inner }
    }

    /// Registers a subscriber on `channels`.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot say where a newly watched channel ends.
    pub async fn subscribe(&self, channels: &[Channel]) -> Result<Subscription, StoreError> {
        let inner = &self.inner;
        let (tx, rx) = mpsc::channel(inner.queue);
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let kicked = Arc::new(AtomicBool::new(false));
        let me = Arc::new(Subscriber {
            id,
            tx,
            channels: channels.to_vec(),
            kicked: kicked.clone(),
        });
        let guard = inner.registry.lock().await;
        let missing: Vec<Channel> = {
            let mut map = lock(&inner.channels);
            map.retain(|_, w| !w.subs.is_empty());
            channels
                .iter()
                .filter(|c| !map.contains_key(*c))
                .cloned()
                .collect()
        };
        let mut fresh = Vec::with_capacity(missing.len());
        for channel in missing {
            let pos = inner.store.last_id(&channel).await?;
            fresh.push((channel, pos));
        }
        let woke = !fresh.is_empty();
        let start = {
            let mut map = lock(&inner.channels);
            for (channel, pos) in fresh {
                map.insert(
                    channel,
                    Watched {
                        pos,
                        subs: Vec::new(),
                    },
                );
            }
            let mut start = Vec::with_capacity(channels.len());
            for channel in channels {
                if let Some(w) = map.get_mut(channel) {
                    w.subs.push(me.clone());
                    start.push((channel.clone(), w.pos));
                }
            }
            start
        };
        if woke {
            if let Err(e) = inner.store.wake().await {
                tracing::warn!(error = %e, "could not wake the tail reader; new channels start within {TAIL_WAIT:?}");
            }
        }
        drop(guard);
        drop(me);
        Ok(Subscription {
            hub: inner.clone(),
            id,
            channels: channels.to_vec(),
            kicked,
            rx,
            start,
        })
    }

    /// Channels watched and subscribers registered, for `/health`.
    pub fn stats(&self) -> (usize, usize) {
        let map = lock(&self.inner.channels);
        // One connection on several channels is one subscriber, listed under each channel.
        let subs: std::collections::HashSet<u64> =
            map.values().flat_map(|w| w.subs.iter().map(|s| s.id)).collect();
        (map.len(), subs.len())
    }
}

async fn tail_loop(hub: Weak<Inner>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(inner) = hub.upgrade() else { return };
        if let Ok(_guard) = inner.registry.try_lock() {
            lock(&inner.channels).retain(|_, w| !w.subs.is_empty());
        }
        let positions: Vec<(Channel, StreamId)> = lock(&inner.channels)
            .iter()
            .map(|(c, w)| (c.clone(), w.pos))
            .collect();
        match inner.store.tail(&positions, TAIL_WAIT, TAIL_COUNT).await {
            Ok(batches) => {
                backoff = Duration::from_millis(50);
                dispatch(&inner, batches);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "tailing the store failed");
                drop(inner);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn dispatch(inner: &Inner, batches: Vec<TailBatch>) {
    let mut map = lock(&inner.channels);
    let mut dropped: Vec<Arc<Subscriber>> = Vec::new();
    for batch in batches {
        let Some(w) = map.get_mut(&batch.channel) else {
            continue;
        };
        if batch.gap {
            // Entries may be missing between our position and this batch: every subscriber of
            // the channel re-reads from its own cursor, which answers exactly.
            tracing::warn!(channel = %batch.channel, "tail fell behind trimming; subscribers will resume from their cursors");
            dropped.append(&mut w.subs);
            if let Some(last) = batch.entries.last() {
                w.pos = w.pos.max(last.id);
            }
            continue;
        }
        for entry in batch.entries {
            if entry.id <= w.pos {
                continue;
            }
            w.pos = entry.id;
            if w.subs.is_empty() {
                continue;
            }
            let delivery = Arc::new(Delivery {
                channel: batch.channel.clone(),
                entry,
            });
            w.subs.retain(|s| match s.tx.try_send(delivery.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped.push(s.clone());
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
    }
    for sub in dropped {
        sub.kicked.store(true, Ordering::Release);
        for channel in &sub.channels {
            if let Some(w) = map.get_mut(channel) {
                w.subs.retain(|s| s.id != sub.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, Retention};

    fn ch(name: &str) -> Channel {
        Channel::new(name).unwrap()
    }

    async fn recv(sub: &mut Subscription) -> Option<Arc<Delivery>> {
        tokio::time::timeout(Duration::from_secs(5), sub.rx.recv())
            .await
            .expect("delivery within 5 s")
    }

    #[tokio::test]
    async fn delivers_to_every_subscriber_of_a_channel_only() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::start(store.clone(), 16);
        let mut a = hub.subscribe(&[ch("x")]).await.unwrap();
        let mut b = hub.subscribe(&[ch("x"), ch("y")]).await.unwrap();
        let mut c = hub.subscribe(&[ch("y")]).await.unwrap();
        assert_eq!(a.start, vec![(ch("x"), StreamId::ZERO)]);
        let id = store.append(&ch("x"), "e", "1").await.unwrap();
        for sub in [&mut a, &mut b] {
            let d = recv(sub).await.unwrap();
            assert_eq!((d.channel.as_str(), d.entry.id), ("x", id));
        }
        let id_y = store.append(&ch("y"), "e", "2").await.unwrap();
        assert_eq!(recv(&mut c).await.unwrap().entry.id, id_y);
        assert_eq!(recv(&mut b).await.unwrap().entry.id, id_y);
        assert!(a.rx.try_recv().is_err(), "a does not watch y");
        assert_eq!(hub.stats(), (2, 3), "two channels, three distinct subscribers");
    }

    #[tokio::test]
    async fn start_position_is_the_channel_end_at_registration() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let before = store.append(&ch("x"), "e", "old").await.unwrap();
        let hub = Hub::start(store.clone(), 16);
        let mut sub = hub.subscribe(&[ch("x")]).await.unwrap();
        assert_eq!(sub.start, vec![(ch("x"), before)]);
        let after = store.append(&ch("x"), "e", "new").await.unwrap();
        assert_eq!(recv(&mut sub).await.unwrap().entry.id, after);
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_subscriber_everywhere_but_not_others() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::start(store.clone(), 2);
        let mut slow = hub.subscribe(&[ch("x"), ch("y")]).await.unwrap();
        let mut fast = hub.subscribe(&[ch("x")]).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(store.append(&ch("x"), "e", &i.to_string()).await.unwrap());
            // keep the fast one drained so only the slow one overflows
            assert_eq!(recv(&mut fast).await.unwrap().entry.id, ids[i]);
        }
        // The slow subscriber got what fit, then its queue closed.
        let mut got = Vec::new();
        while let Some(d) = recv(&mut slow).await {
            got.push(d.entry.id);
        }
        assert!(slow.kicked(), "slow subscriber is marked kicked");
        assert_eq!(got, ids[..2].to_vec(), "exactly the queue's capacity, in order");
        // It was removed from y as well: a later y entry does not reopen anything.
        store.append(&ch("y"), "e", "z").await.unwrap();
        assert_eq!(hub.stats().1, 1, "only the fast subscriber remains registered");
    }

    #[tokio::test]
    async fn dropping_a_subscription_unregisters_it() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::start(store.clone(), 4);
        let sub = hub.subscribe(&[ch("x"), ch("y")]).await.unwrap();
        assert_eq!(hub.stats(), (2, 1));
        drop(sub);
        assert_eq!(hub.stats().1, 0);
        // Unwatched channels are forgotten at the next registration.
        let _other = hub.subscribe(&[ch("z")]).await.unwrap();
        assert_eq!(hub.stats(), (1, 1));
    }

    #[tokio::test]
    async fn a_tail_gap_kicks_the_channels_subscribers() {
        let store = Arc::new(MemoryStore::new(Retention::default().max_len(3)));
        let inner = Inner {
            store: store.clone(),
            channels: Mutex::new(HashMap::new()),
            registry: tokio::sync::Mutex::new(()),
            queue: 8,
            next_id: AtomicU64::new(1),
        };
        // Drive dispatch by hand: a batch flagged as a gap must not be delivered.
        let (tx, mut rx) = mpsc::channel(8);
        let kicked = Arc::new(AtomicBool::new(false));
        let sub = Arc::new(Subscriber {
            id: 1,
            tx,
            channels: vec![ch("x")],
            kicked: kicked.clone(),
        });
        lock(&inner.channels).insert(
            ch("x"),
            Watched {
                pos: StreamId::new(1, 0),
                subs: vec![sub],
            },
        );
        let entry = Entry {
            id: StreamId::new(9, 0),
            event: "e".into(),
            data: "1".into(),
        };
        dispatch(
            &inner,
            vec![TailBatch {
                channel: ch("x"),
                entries: vec![entry],
                gap: true,
            }],
        );
        assert!(kicked.load(Ordering::Acquire));
        assert!(
            rx.recv().await.is_none(),
            "nothing delivered across a gap; the queue is closed"
        );
        assert_eq!(lock(&inner.channels)[&ch("x")].pos, StreamId::new(9, 0));
    }
}
