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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::channel::Channel;
use crate::id::{Epoch, Position, StreamId};
use crate::store::{Entry, Store, StoreError, TailBatch};

/// Says whether an event name can be delivered (the loaded schema knows it).
pub(crate) type Known = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How long one tail call blocks when nothing happens.
const TAIL_WAIT: Duration = Duration::from_secs(5);
/// Entries read per channel per tail call.
const TAIL_COUNT: usize = 512;

/// One new entry, shared by every subscriber that receives it.
pub(crate) struct Delivery {
    pub channel: Channel,
    pub entry: Entry,
    /// The epoch of the channel's history the entry belongs to.
    pub epoch: Option<Epoch>,
    /// The payload parsed, once, by the first filter that needs it.
    pub parsed: std::sync::OnceLock<Option<serde_json::Value>>,
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<Delivery>>,
    /// The channels it is registered on (changed by [`Subscription::join`] and
    /// [`Subscription::leave`]); a kicked subscriber leaves all of them at once.
    channels: Mutex<Vec<Channel>>,
    /// Set when the hub dropped this subscriber (queue full, or a possible gap in the tail).
    kicked: AtomicBool,
    /// Wakes the subscription's [`Subscription::recv`] when it is kicked: its own handle keeps
    /// the queue open, so the queue alone would not end.
    kick: tokio::sync::Notify,
    /// Entries queued so far (counted by the hub, under its lock): when the subscription has
    /// taken as many, nothing is waiting for it.
    queued: AtomicU64,
}

struct Watched {
    /// The last entry handed out for this channel, and the epoch of its history; `None` while
    /// the first subscribers read where the channel ends (the tail leaves it alone until then).
    pos: Option<Position>,
    /// By id: a subscriber leaves in O(1), so dropping many at once is not quadratic.
    subs: HashMap<u64, Registered>,
    /// Subscribers whose filter needs one of a few values of a payload field
    /// ([`Filter::index`](crate::filter::Filter)), by the field's path and those values' keys:
    /// an event is tested only by those whose value it has, and by `rest`.
    index: Vec<(Vec<String>, Buckets)>,
    /// The subscribers not in `index`.
    rest: HashSet<u64>,
}

/// Subscriber ids by the key of the value their filter needs.
type Buckets = HashMap<String, HashSet<u64>>;

impl Watched {
    fn new() -> Watched {
        Watched {
            pos: None,
            subs: HashMap::new(),
            index: Vec::new(),
            rest: HashSet::new(),
        }
    }

    fn register(&mut self, id: u64, sub: Arc<Subscriber>, want: crate::session::Events) {
        self.unregister(id);
        let indexed = want
            .as_ref()
            .and_then(|w| w.filter.as_ref())
            .and_then(|f| f.index())
            .map(|(path, keys)| (path.to_vec(), keys));
        match &indexed {
            Some((path, keys)) => {
                let at = match self.index.iter().position(|(p, _)| p == path) {
                    Some(at) => at,
                    None => {
                        self.index.push((path.clone(), HashMap::new()));
                        self.index.len() - 1
                    }
                };
                for key in keys {
                    self.index[at].1.entry(key.clone()).or_default().insert(id);
                }
            }
            None => {
                self.rest.insert(id);
            }
        }
        self.subs.insert(id, Registered { sub, want, indexed });
    }

    fn unregister(&mut self, id: u64) -> Option<Registered> {
        let r = self.subs.remove(&id)?;
        match &r.indexed {
            Some((path, keys)) => {
                if let Some(at) = self.index.iter().position(|(p, _)| p == path) {
                    let buckets = &mut self.index[at].1;
                    for key in keys {
                        if let Some(ids) = buckets.get_mut(key) {
                            ids.remove(&id);
                            if ids.is_empty() {
                                buckets.remove(key);
                            }
                        }
                    }
                    if buckets.is_empty() {
                        self.index.swap_remove(at);
                    }
                }
            }
            None => {
                self.rest.remove(&id);
            }
        }
        Some(r)
    }

    /// Every subscriber, for a gap: the channel starts over.
    fn drain(&mut self) -> impl Iterator<Item = Arc<Subscriber>> + '_ {
        self.index.clear();
        self.rest.clear();
        self.subs.drain().map(|(_, r)| r.sub)
    }
}

/// A subscriber on one channel, with what it wants of it.
struct Registered {
    sub: Arc<Subscriber>,
    /// Tested here, before the entry is queued: a subscriber that filters is not woken for
    /// what it does not want ([`Subscription::caught_up`] tells it how far the hub got).
    want: crate::session::Events,
    /// Where it is in [`Watched::index`]: the path and the value keys.
    indexed: Option<(Vec<String>, Vec<String>)>,
}

struct Inner {
    store: Arc<dyn Store>,
    /// Only ever locked for map work, never across a store round trip.
    channels: Mutex<HashMap<Channel, Watched>>,
    queue: usize,
    next_id: AtomicU64,
    known: Known,
}

/// The fan-out of one node.
#[derive(Clone)]
pub(crate) struct Hub {
    inner: Arc<Inner>,
}

/// A registration with the hub; dropping it unregisters.
///
/// Its channels can change while it lives ([`Subscription::join`], [`Subscription::leave`]), as
/// a WebSocket connection's do; an SSE stream joins its channels once.
pub(crate) struct Subscription {
    hub: Arc<Inner>,
    me: Arc<Subscriber>,
    /// New entries, in order per channel.
    rx: mpsc::Receiver<Arc<Delivery>>,
    /// Each channel's position when the subscription started: every later entry arrives in `rx`.
    pub start: Vec<(Channel, Position)>,
    /// Entries taken from `rx`.
    received: u64,
    /// Registered with a filter on some channel: the hub may go past entries without a word.
    filtered: bool,
}

impl Subscription {
    /// True when the hub dropped this subscriber; [`Subscription::recv`] then ends after what
    /// the queue already holds.
    pub fn kicked(&self) -> bool {
        self.me.kicked.load(Ordering::Acquire)
    }

    /// The next entry, in order per channel; `None` once the subscriber was kicked and its
    /// queue is drained. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Arc<Delivery>> {
        if self.kicked() {
            return self.rx.try_recv().ok();
        }
        let d = tokio::select! {
            biased;
            d = self.rx.recv() => d,
            _ = self.me.kick.notified() => self.rx.try_recv().ok(),
        };
        self.received += u64::from(d.is_some());
        d
    }

    /// The next entry if one is queued now.
    pub fn try_recv(&mut self) -> Option<Arc<Delivery>> {
        let d = self.rx.try_recv().ok();
        self.received += u64::from(d.is_some());
        d
    }

    /// When nothing is queued for this subscription beyond what it took, calls `f` with the
    /// hub's position on each of its channels but `except`: every entry up to there that it
    /// wants has been taken (the others its filters left out), so its cursor may move there.
    /// Nothing for a subscription without filters (it is handed every entry) or a kicked one
    /// (the hub may have gone past a gap).
    pub fn caught_up(&self, except: Option<&Channel>, mut f: impl FnMut(&Channel, Position)) {
        if !self.filtered {
            return;
        }
        let map = lock(&self.hub.channels);
        if self.me.queued.load(Ordering::Relaxed) != self.received || self.kicked() {
            return;
        }
        for channel in lock(&self.me.channels).iter() {
            if except == Some(channel) {
                continue;
            }
            if let Some(pos) = map.get(channel).and_then(|w| w.pos) {
                f(channel, pos);
            }
        }
    }

    /// Registers on more `channels` and returns each one's position at that moment: every
    /// later entry of theirs that `want` selects arrives in [`Subscription::recv`] (every entry
    /// of a presence channel).
    ///
    /// Registering is one short critical section; a channel nobody watched yet has its end read
    /// from the store afterwards, outside any lock, so a reconnect storm's subscribes do not
    /// queue behind each other's round trips. Until a channel's end is known the tail leaves it
    /// alone, so nothing after that end is missed.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot say where a newly watched channel ends; the
    /// subscription is then not registered on any of `channels`.
    pub async fn join(
        &mut self,
        channels: &[Channel],
        want: &crate::session::Events,
    ) -> Result<Vec<(Channel, Position)>, StoreError> {
        self.filtered |= want.is_some();
        let inner = &self.hub;
        let id = self.me.id;
        let mut start: Vec<(Channel, Option<Position>)> = {
            let mut map = lock(&inner.channels);
            lock(&self.me.channels).extend(channels.iter().cloned());
            channels
                .iter()
                .map(|channel| {
                    let w = map.entry(channel.clone()).or_insert_with(Watched::new);
                    let want = if channel.presence_of().is_none() {
                        want.clone()
                    } else {
                        None
                    };
                    w.register(id, self.me.clone(), want);
                    (channel.clone(), w.pos)
                })
                .collect()
        };
        let unknown: Vec<usize> = (0..start.len()).filter(|&i| start[i].1.is_none()).collect();
        if !unknown.is_empty() {
            let reads = unknown.iter().map(|&i| inner.store.position(&start[i].0));
            let mut found = Vec::with_capacity(unknown.len());
            for pos in futures_util::future::join_all(reads).await {
                match pos {
                    Ok(pos) => found.push(pos),
                    Err(e) => {
                        self.leave(channels);
                        return Err(e);
                    }
                }
            }
            {
                let mut map = lock(&inner.channels);
                for (&i, pos) in unknown.iter().zip(found) {
                    // This subscriber is on the channel, so its entry is there. The first read
                    // to land sets the position; later ones take it, so every subscriber of a
                    // channel starts where the tail does.
                    if let Some(w) = map.get_mut(&start[i].0) {
                        start[i].1 = Some(*w.pos.get_or_insert(pos));
                    }
                }
            }
            if let Err(e) = inner.store.wake().await {
                tracing::warn!(error = %e, "could not wake the tail reader; new channels start within {TAIL_WAIT:?}");
            }
        }
        Ok(start
            .into_iter()
            .map(|(c, pos)| (c, pos.unwrap_or(Position::ZERO)))
            .collect())
    }

    /// Unregisters from `channels`; entries of theirs already queued still arrive.
    pub fn leave(&mut self, channels: &[Channel]) {
        let mut map = lock(&self.hub.channels);
        lock(&self.me.channels).retain(|c| !channels.contains(c));
        for channel in channels {
            leave(&mut map, channel, self.me.id);
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut map = lock(&self.hub.channels);
        for channel in lock(&self.me.channels).iter() {
            leave(&mut map, channel, self.me.id);
        }
    }
}

/// Takes subscriber `id` off `channel`, and forgets the channel when no one is left on it.
fn leave(map: &mut HashMap<Channel, Watched>, channel: &Channel, id: u64) {
    if let Some(w) = map.get_mut(channel) {
        w.unregister(id);
        if w.subs.is_empty() {
            map.remove(channel);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the map consistent between statements, so a poisoned lock
    // (a panic elsewhere) is safe to keep using.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// Starts the hub's tail task on the current runtime. `queue` bounds each subscriber's queue;
    /// entries whose event `known` refuses are skipped.
    pub fn start(store: Arc<dyn Store>, queue: usize, known: Known) -> Hub {
        let inner = Arc::new(Inner {
            store,
            channels: Mutex::new(HashMap::new()),
            queue: queue.max(1),
            next_id: AtomicU64::new(1),
            known,
        });
        tokio::spawn(tail_loop(Arc::downgrade(&inner)));
        Hub { inner }
    }

    /// A subscription on no channel yet: [`Subscription::join`] adds them.
    pub fn subscriber(&self) -> Subscription {
        let inner = &self.inner;
        let (tx, rx) = mpsc::channel(inner.queue);
        let me = Arc::new(Subscriber {
            id: inner.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            channels: Mutex::new(Vec::new()),
            kicked: AtomicBool::new(false),
            kick: tokio::sync::Notify::new(),
            queued: AtomicU64::new(0),
        });
        Subscription {
            hub: inner.clone(),
            me,
            rx,
            start: Vec::new(),
            received: 0,
            filtered: false,
        }
    }

    /// Registers a subscriber on `channels` for `want` ([`Hub::subscriber`], then
    /// [`Subscription::join`]); its `start` holds each channel's position.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot say where a newly watched channel ends.
    pub async fn subscribe(
        &self,
        channels: &[Channel],
        want: &crate::session::Events,
    ) -> Result<Subscription, StoreError> {
        let mut sub = self.subscriber();
        sub.start = sub.join(channels, want).await?;
        Ok(sub)
    }

    /// Channels watched and subscribers registered, for `/health`.
    pub fn stats(&self) -> (usize, usize) {
        let map = lock(&self.inner.channels);
        // One connection on several channels is one subscriber, listed under each channel.
        let subs: std::collections::HashSet<u64> =
            map.values().flat_map(|w| w.subs.keys().copied()).collect();
        (map.len(), subs.len())
    }
}

async fn tail_loop(hub: Weak<Inner>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(inner) = hub.upgrade() else { return };
        let positions: Vec<(Channel, Position)> = lock(&inner.channels)
            .iter()
            .filter_map(|(c, w)| w.pos.map(|p| (c.clone(), p)))
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
    let mut emptied = false;
    for batch in batches {
        let Some(w) = map.get_mut(&batch.channel) else {
            continue;
        };
        // Written back below: the subscriber lists change meanwhile.
        let Some(mut pos) = w.pos else { continue };
        // A channel first seen without a stream takes the epoch of the stream created since.
        let replaced = batch.epoch != pos.epoch && pos.id > StreamId::ZERO;
        if batch.gap || replaced {
            // Entries may be missing between our position and this batch: every subscriber of
            // the channel re-reads from its own cursor, which answers exactly.
            if replaced {
                tracing::warn!(channel = %batch.channel, "the channel's history was replaced (its stream was deleted, evicted or lost); subscribers will resume from their cursors and get tidings.reset");
            } else {
                tracing::warn!(channel = %batch.channel, "tail fell behind trimming; subscribers will resume from their cursors");
            }
            dropped.extend(w.drain());
            emptied = true;
            if let Some(last) = batch.entries.last() {
                w.pos = Some(if replaced {
                    Position::new(last.id, batch.epoch)
                } else {
                    Position::new(pos.id.max(last.id), batch.epoch)
                });
            }
            continue;
        }
        pos.epoch = batch.epoch;
        for entry in batch.entries {
            if entry.id <= pos.id {
                continue;
            }
            pos.id = entry.id;
            if w.subs.is_empty() {
                continue;
            }
            if !crate::store::skip::deliverable(batch.channel.as_str(), &entry, &*inner.known) {
                continue;
            }
            let delivery = Arc::new(Delivery {
                channel: batch.channel.clone(),
                entry,
                epoch: batch.epoch,
                parsed: std::sync::OnceLock::new(),
            });
            let mut gone = Vec::new();
            if w.index.is_empty() {
                for (&id, r) in &w.subs {
                    if !offer(r, &delivery, &mut dropped) {
                        gone.push(id);
                    }
                }
            } else {
                // Only the filters that can pass it test it: those indexed under the value it
                // has, and the rest.
                let data = delivery.parsed.get_or_init(|| delivery.entry.parsed()).as_ref();
                let mut ids: Vec<u64> = w.rest.iter().copied().collect();
                for (path, buckets) in &w.index {
                    let key = data
                        .and_then(|d| crate::filter::value_at(d, path))
                        .and_then(crate::filter::value_key);
                    if let Some(found) = key.and_then(|k| buckets.get(&k)) {
                        ids.extend(found);
                    }
                }
                for id in ids {
                    if !w.subs.get(&id).is_some_and(|r| offer(r, &delivery, &mut dropped)) {
                        gone.push(id);
                    }
                }
            }
            for id in gone {
                w.unregister(id);
            }
            emptied |= w.subs.is_empty();
        }
        w.pos = Some(pos);
    }
    // A dropped subscriber leaves every channel it watched: O(its channels), however many are
    // dropped at once.
    for sub in dropped {
        sub.kicked.store(true, Ordering::Release);
        sub.kick.notify_one();
        for channel in lock(&sub.channels).iter() {
            leave(&mut map, channel, sub.id);
        }
    }
    // A channel whose subscribers all went (kicked, or queues closed) is forgotten; the
    // subscribers' own drops would do it, but they may be gone already.
    if emptied {
        map.retain(|_, w| !w.subs.is_empty());
    }
}

/// Hands `delivery` to `r` if it wants it; `false` when `r` is to go (its queue is full: it is
/// also put in `dropped`; or closed).
fn offer(r: &Registered, delivery: &Arc<Delivery>, dropped: &mut Vec<Arc<Subscriber>>) -> bool {
    // The payload is parsed once, by the first filter that needs it.
    let wanted = r
        .want
        .as_ref()
        .is_none_or(|want| want.admits(&delivery.channel, &delivery.entry, Some(&delivery.parsed)));
    if !wanted {
        return true;
    }
    match r.sub.tx.try_send(delivery.clone()) {
        Ok(()) => {
            r.sub.queued.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            dropped.push(r.sub.clone());
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, Retention};

    fn ch(name: &str) -> Channel {
        Channel::new(name).unwrap()
    }

    fn any() -> Known {
        Arc::new(|_: &str| true)
    }

    async fn add(store: &dyn Store, channel: &Channel, data: &str) -> StreamId {
        let opts = crate::store::AppendOptions::default();
        store.append(channel, "e", data, opts).await.unwrap().id
    }

    async fn recv(sub: &mut Subscription) -> Option<Arc<Delivery>> {
        tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("delivery within 5 s")
    }

    #[tokio::test]
    async fn delivers_to_every_subscriber_of_a_channel_only() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::start(store.clone(), 16, any());
        let mut a = hub.subscribe(&[ch("x")], &None).await.unwrap();
        let mut b = hub.subscribe(&[ch("x"), ch("y")], &None).await.unwrap();
        let mut c = hub.subscribe(&[ch("y")], &None).await.unwrap();
        assert_eq!(a.start, vec![(ch("x"), Position::ZERO)]);
        let id = add(&*store, &ch("x"), "1").await;
        for sub in [&mut a, &mut b] {
            let d = recv(sub).await.unwrap();
            assert_eq!((d.channel.as_str(), d.entry.id), ("x", id));
        }
        let id_y = add(&*store, &ch("y"), "2").await;
        assert_eq!(recv(&mut c).await.unwrap().entry.id, id_y);
        assert_eq!(recv(&mut b).await.unwrap().entry.id, id_y);
        assert!(a.try_recv().is_none(), "a does not watch y");
        assert_eq!(hub.stats(), (2, 3), "two channels, three distinct subscribers");
    }

    #[tokio::test]
    async fn filters_are_tested_before_queueing_through_the_index_and_caught_up_says_how_far() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::start(store.clone(), 16, any());
        let want = |f: serde_json::Value| {
            crate::session::Want::new(None, Some(crate::filter::Filter::parse(&f).unwrap()))
        };
        // Indexed by n (eq, in, and an eq under and); by nothing (ne); no filter.
        let mut one = hub
            .subscribe(&[ch("x"), ch("y")], &want(serde_json::json!({"n": 1})))
            .await
            .unwrap();
        let mut odd = hub
            .subscribe(&[ch("x")], &want(serde_json::json!({"n": {"in": [1, 3.0]}})))
            .await
            .unwrap();
        let mut both = hub
            .subscribe(
                &[ch("x")],
                &want(serde_json::json!({"and": [{"m": {"exists": false}}, {"n": 3}]})),
            )
            .await
            .unwrap();
        let mut not2 = hub
            .subscribe(&[ch("x")], &want(serde_json::json!({"n": {"ne": 2}})))
            .await
            .unwrap();
        let mut all = hub.subscribe(&[ch("x")], &None).await.unwrap();
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(add(&*store, &ch("x"), &format!(r#"{{"n":{n}}}"#)).await);
            // Wait for the unfiltered one, so the hub has handed the entry to everyone.
            assert_eq!(recv(&mut all).await.unwrap().entry.id, ids[n]);
        }
        let got = |sub: &mut Subscription| {
            let mut out = Vec::new();
            while let Some(d) = sub.try_recv() {
                out.push(ids.iter().position(|id| *id == d.entry.id).unwrap());
            }
            out
        };
        assert_eq!(got(&mut one), [1]);
        assert_eq!(got(&mut odd), [1, 3]);
        assert_eq!(got(&mut both), [3]);
        assert_eq!(got(&mut not2), [0, 1, 3, 4]);
        // Everything queued was taken: the hub's positions are safe to move to.
        let at = |sub: &Subscription, except: Option<&Channel>| {
            let mut out = Vec::new();
            sub.caught_up(except, |c, p| out.push((c.as_str().to_string(), p.id)));
            out.sort();
            out
        };
        let y0 = ("y".to_string(), StreamId::ZERO);
        assert_eq!(at(&one, None), [("x".to_string(), ids[4]), y0.clone()]);
        assert_eq!(at(&one, Some(&ch("x"))), std::slice::from_ref(&y0));
        assert_eq!(
            at(&all, None),
            [],
            "a subscription without filters is handed everything"
        );
        // Something queued and not taken yet: not before it is.
        let late = add(&*store, &ch("x"), r#"{"n":1}"#).await;
        assert_eq!(recv(&mut all).await.unwrap().entry.id, late);
        assert_eq!(at(&one, None), [], "n=1 is still queued for it");
        assert_eq!(one.try_recv().unwrap().entry.id, late);
        assert_eq!(at(&one, None), [("x".to_string(), late), y0]);
        // Leaving takes a subscriber out of the index.
        drop(odd);
        let three = add(&*store, &ch("x"), r#"{"n":3}"#).await;
        assert_eq!(recv(&mut all).await.unwrap().entry.id, three);
        assert_eq!(recv(&mut both).await.unwrap().entry.id, three);
        assert!(one.try_recv().is_none());
    }

    #[tokio::test]
    async fn start_position_is_the_channel_end_at_registration() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let before = add(&*store, &ch("x"), "old").await;
        let hub = Hub::start(store.clone(), 16, any());
        let mut sub = hub.subscribe(&[ch("x")], &None).await.unwrap();
        assert_eq!(sub.start[0].0, ch("x"));
        assert_eq!(sub.start[0].1.id, before);
        assert!(sub.start[0].1.epoch.is_some(), "the memory store names its epoch");
        let after = add(&*store, &ch("x"), "new").await;
        assert_eq!(recv(&mut sub).await.unwrap().entry.id, after);
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_subscriber_everywhere_but_not_others() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::start(store.clone(), 2, any());
        let mut slow = hub.subscribe(&[ch("x"), ch("y")], &None).await.unwrap();
        let mut fast = hub.subscribe(&[ch("x")], &None).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(add(&*store, &ch("x"), &i.to_string()).await);
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
        // It was removed from y as well: y is no longer watched, and only the fast subscriber
        // (on x) is registered; a later y entry reaches no one and reopens nothing.
        assert_eq!(hub.stats(), (1, 1), "x watched by the fast subscriber only");
        add(&*store, &ch("y"), "z").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(hub.stats(), (1, 1));
        assert!(slow.try_recv().is_none(), "nothing after the kick");
    }

    #[tokio::test]
    async fn dropping_a_subscription_unregisters_it() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::start(store.clone(), 4, any());
        let sub = hub.subscribe(&[ch("x"), ch("y")], &None).await.unwrap();
        assert_eq!(hub.stats(), (2, 1));
        drop(sub);
        assert_eq!(hub.stats().1, 0);
        // Unwatched channels are forgotten at the next registration.
        let _other = hub.subscribe(&[ch("z")], &None).await.unwrap();
        assert_eq!(hub.stats(), (1, 1));
    }

    /// A hub with one subscriber on `x` at `pos`, driven by hand through `dispatch`.
    fn by_hand(pos: Position) -> (Inner, mpsc::Receiver<Arc<Delivery>>, Arc<Subscriber>) {
        let known: Known = Arc::new(|event: &str| event != "unknown");
        let inner = Inner {
            store: Arc::new(MemoryStore::new(Retention::default().max_len(3))),
            channels: Mutex::new(HashMap::new()),
            queue: 8,
            next_id: AtomicU64::new(1),
            known,
        };
        let (tx, rx) = mpsc::channel(8);
        let sub = Arc::new(Subscriber {
            id: 1,
            tx,
            channels: Mutex::new(vec![ch("x")]),
            kicked: AtomicBool::new(false),
            kick: tokio::sync::Notify::new(),
            queued: AtomicU64::new(0),
        });
        let kicked = sub.clone();
        lock(&inner.channels).insert(
            ch("x"),
            Watched {
                pos: Some(pos),
                subs: HashMap::from([(
                    1,
                    Registered {
                        sub: sub.clone(),
                        want: None,
                        indexed: None,
                    },
                )]),
                index: Vec::new(),
                rest: HashSet::from([1]),
            },
        );
        (inner, rx, kicked)
    }

    fn entry(ms: u64, event: &str) -> Entry {
        Entry {
            id: StreamId::new(ms, 0),
            event: event.into(),
            data: "1".into(),
        }
    }

    fn batch(entries: Vec<Entry>, epoch: Option<Epoch>, gap: bool) -> TailBatch {
        TailBatch {
            channel: ch("x"),
            entries,
            epoch,
            gap,
        }
    }

    #[tokio::test]
    async fn a_tail_gap_or_a_new_epoch_kicks_the_channels_subscribers() {
        let (e1, e2) = ("00000001".parse().ok(), "00000002".parse().ok());
        // A gap in the same history, and a history replaced without a gap the store could see.
        for (epoch, gap) in [(e1, true), (e2, false), (None, false)] {
            let (inner, mut rx, kicked) = by_hand(Position::new(StreamId::new(1, 0), e1));
            dispatch(&inner, vec![batch(vec![entry(9, "e")], epoch, gap)]);
            assert!(kicked.kicked.load(Ordering::Acquire), "{epoch:?} {gap}");
            assert!(rx.try_recv().is_err(), "nothing delivered across a gap");
            // Its subscribers gone, the channel is forgotten: the next subscriber reads its end.
            assert!(!lock(&inner.channels).contains_key(&ch("x")));
        }
    }

    #[tokio::test]
    async fn a_channel_watched_before_its_stream_existed_takes_the_new_epoch() {
        let e1 = "00000001".parse().ok();
        let (inner, mut rx, kicked) = by_hand(Position::ZERO);
        dispatch(&inner, vec![batch(vec![entry(9, "e")], e1, false)]);
        assert!(!kicked.kicked.load(Ordering::Acquire));
        let d = rx.recv().await.unwrap();
        assert_eq!((d.entry.id, d.epoch), (StreamId::new(9, 0), e1));
        assert_eq!(lock(&inner.channels)[&ch("x")].pos.unwrap().epoch, e1);
    }

    #[tokio::test]
    async fn unreadable_and_unknown_entries_are_skipped_and_passed() {
        let (inner, mut rx, kicked) = by_hand(Position::ZERO);
        let before = crate::store::skipped_entries();
        let entries = vec![
            Entry::unreadable(StreamId::new(2, 0)),
            entry(3, "unknown"),
            entry(4, "e"),
        ];
        dispatch(&inner, vec![batch(entries, None, false)]);
        assert!(!kicked.kicked.load(Ordering::Acquire));
        assert_eq!(rx.recv().await.unwrap().entry.id, StreamId::new(4, 0));
        assert!(rx.try_recv().is_err(), "only the readable, known entry");
        assert_eq!(
            lock(&inner.channels)[&ch("x")].pos.unwrap().id,
            StreamId::new(4, 0)
        );
        assert!(
            crate::store::skipped_entries() > before,
            "the unknown event is counted"
        );
    }

    /// The memory store, with `position` of channel `slow` held until `release` is notified.
    struct SlowPosition {
        inner: MemoryStore,
        release: tokio::sync::Notify,
    }

    impl Store for SlowPosition {
        fn kind(&self) -> &'static str {
            "slow"
        }
        fn append<'a>(
            &'a self,
            c: &'a Channel,
            e: &'a str,
            d: &'a str,
            o: crate::store::AppendOptions<'a>,
        ) -> futures_util::future::BoxFuture<'a, Result<crate::store::Appended, StoreError>> {
            self.inner.append(c, e, d, o)
        }
        fn history<'a>(
            &'a self,
            c: &'a Channel,
            r: crate::store::Range,
            n: usize,
        ) -> futures_util::future::BoxFuture<'a, Result<crate::store::History, StoreError>> {
            self.inner.history(c, r, n)
        }
        fn replay<'a>(
            &'a self,
            c: &'a Channel,
            a: Position,
            n: usize,
        ) -> futures_util::future::BoxFuture<'a, Result<crate::store::Replay, StoreError>> {
            self.inner.replay(c, a, n)
        }
        fn position<'a>(
            &'a self,
            c: &'a Channel,
        ) -> futures_util::future::BoxFuture<'a, Result<Position, StoreError>> {
            use futures_util::FutureExt;
            async move {
                if c.as_str() == "slow" {
                    self.release.notified().await;
                }
                self.inner.position(c).await
            }
            .boxed()
        }
        fn tail<'a>(
            &'a self,
            p: &'a [(Channel, Position)],
            w: Duration,
            n: usize,
        ) -> futures_util::future::BoxFuture<'a, Result<Vec<TailBatch>, StoreError>> {
            self.inner.tail(p, w, n)
        }
        fn wake(&self) -> futures_util::future::BoxFuture<'_, Result<(), StoreError>> {
            self.inner.wake()
        }
        fn ping(&self) -> futures_util::future::BoxFuture<'_, Result<(), StoreError>> {
            self.inner.ping()
        }
    }

    #[tokio::test]
    async fn a_subscribe_waiting_for_the_store_holds_up_no_other() {
        let store = Arc::new(SlowPosition {
            inner: MemoryStore::default(),
            release: tokio::sync::Notify::new(),
        });
        let hub = Hub::start(store.clone(), 16, any());
        let slow = tokio::spawn({
            let hub = hub.clone();
            async move { hub.subscribe(&[ch("slow")], &None).await.map(|s| s.start.clone()) }
        });
        tokio::task::yield_now().await;
        // While the first waits for the store, others subscribe, to new channels and to the one
        // it is reading.
        for name in ["a", "b", "c"] {
            let sub = tokio::time::timeout(Duration::from_secs(2), hub.subscribe(&[ch(name)], &None))
                .await
                .expect("not held up by the pending subscribe")
                .unwrap();
            assert_eq!(sub.start[0].1, Position::ZERO);
        }
        assert!(!slow.is_finished());
        let id = add(&*store, &ch("slow"), "1").await;
        store.release.notify_one();
        let start = slow.await.unwrap().unwrap();
        assert_eq!(start[0].1.id, id, "the end read after registering");
    }

    #[tokio::test]
    async fn dropping_many_subscribers_at_once_is_not_quadratic() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::start(store, 4, any());
        let mut took = Vec::new();
        for n in [2_000, 20_000] {
            let mut subs = Vec::with_capacity(n);
            for _ in 0..n {
                subs.push(hub.subscribe(&[ch("x"), ch("y")], &None).await.unwrap());
            }
            let started = std::time::Instant::now();
            drop(subs);
            took.push(started.elapsed());
            assert_eq!(hub.stats(), (0, 0));
        }
        // Ten times the subscribers: about ten times the time, not a hundred.
        assert!(took[1] < took[0] * 40 + Duration::from_millis(100), "{took:?}");
    }
}
