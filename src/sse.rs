//! The SSE connection: replay from a cursor, then live events, one `id:` cursor for all channels.
//!
//! Frames (every field value is checked to be one line before it is written):
//!
//! ```text
//! retry: 2000                           once, first: the reconnect delay hint
//!
//! id: room:1=1700000000000-0,room:2=0-0
//! event: chat.message
//! data: {"id":"1700000000000-0","channel":"room:1","event":"chat.message","data":{…}}
//!
//! id: room:1=…,room:2=…                 after history is replayed: the cursor so far, and
//! event: tidings.ready                  the heartbeat interval (a client that hears nothing
//! data: {"cursor":"…","channels":["room:1","room:2"],"heartbeat_ms":15000}   for longer knows)
//!
//! id: …                                 history after the client's cursor was trimmed
//! event: tidings.reset
//! data: {"channel":"room:1","oldest":"1700000000005-0","cursor":"…"}
//!
//! event: tidings.ping                  every heartbeat interval without other frames: an event,
//! data: {}                              so a browser's EventSource shows it to the page
//!
//! id: …                                 the client fell behind and is disconnected
//! event: tidings.lagged
//! data: {"reason":"…","cursor":"…"}
//! ```

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::mpsc;

use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::envelope::write_envelope;
use crate::hub::{Delivery, Subscription};
use crate::id::StreamId;
use crate::store::{Entry, Store, StoreError};

/// Entries read per channel per replay page.
const REPLAY_PAGE: usize = 500;
/// Frames are gathered into chunks of about this size before they are written.
const CHUNK: usize = 32 * 1024;
/// The heartbeat frame.
const PING: &str = "event: tidings.ping\ndata: {}\n\n";

/// What one SSE connection asked for, already checked.
pub(crate) struct StreamRequest {
    pub channels: Vec<Channel>,
    pub events: Option<HashSet<String>>,
    pub cursor: Option<Cursor>,
}

pub(crate) struct StreamSettings {
    pub heartbeat: Duration,
    /// A write that makes no progress for this long ends the stream (the client is gone).
    pub write_timeout: Duration,
    pub retry: Duration,
    /// Becomes true when the server shuts down.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// When the client's credential expires: the stream ends then with `tidings.expired`.
    pub deadline: Option<tokio::time::Instant>,
    /// Counts the stream against the connection limits until it ends. Held here, in the
    /// stream's own future, rather than by a wrapping `async` block: awaiting a moved future
    /// inside another keeps both copies, which doubled the memory of every idle stream.
    #[allow(dead_code, reason = "held, never read: dropping it ends the count")]
    pub permit: crate::limits::ConnectionPermit,
}

/// Where a connection's bytes go: hyper's response body, or a socket written directly.
pub(crate) trait Sink: Send + 'static {
    /// Writes one chunk; `Err` when the client is gone.
    fn send(&mut self, chunk: Bytes) -> impl std::future::Future<Output = Result<(), Gone>> + Send;
    /// Completes when the client is gone.
    fn closed(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// The client went away.
pub(crate) struct Gone;

/// The hyper path: chunks go into the response body's channel.
impl Sink for mpsc::Sender<Bytes> {
    async fn send(&mut self, chunk: Bytes) -> Result<(), Gone> {
        mpsc::Sender::send(self, chunk).await.map_err(|_| Gone)
    }

    async fn closed(&mut self) {
        mpsc::Sender::closed(self).await
    }
}

/// Writes frames into `out` and sends them to the client as chunks.
struct Writer<S> {
    out: S,
    buf: String,
    /// A chunk that cannot be written within this is a client that stopped reading, or a peer
    /// that is gone without a word: treated as gone, so the stream ends and frees its slot.
    write_timeout: Duration,
}

impl<S: Sink> Writer<S> {
    async fn flush(&mut self) -> Result<(), Gone> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Taking the buffer leaves no allocation behind: an idle connection holds none.
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        match tokio::time::timeout(self.write_timeout, self.out.send(chunk)).await {
            Ok(sent) => sent,
            Err(_) => {
                tracing::debug!(timeout = ?self.write_timeout, "a write made no progress; closing the stream");
                Err(Gone)
            }
        }
    }

    async fn maybe_flush(&mut self) -> Result<(), Gone> {
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    fn frame(&mut self, cursor: &Cursor, event: &str, data: impl FnOnce(&mut String)) {
        let _ = write!(self.buf, "id: {cursor}\nevent: {event}\ndata: ");
        data(&mut self.buf);
        self.buf.push_str("\n\n");
    }

    fn entry(&mut self, cursor: &Cursor, channel: &Channel, entry: &Entry) {
        let event = entry.event.clone();
        self.frame(cursor, &event, |b| write_envelope(b, channel, entry));
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// One channel's replay in progress.
struct ReplayState {
    channel: Channel,
    buf: VecDeque<Entry>,
    after: StreamId,
    done: bool,
}

async fn fill(store: &dyn Store, r: &mut ReplayState) -> Result<(), StoreError> {
    let page = store.replay(&r.channel, r.after, REPLAY_PAGE).await?;
    r.done = page.entries.len() < REPLAY_PAGE;
    if let Some(last) = page.entries.last() {
        r.after = last.id;
    }
    r.buf.extend(page.entries);
    Ok(())
}

/// Runs one connection until the client goes away, the hub drops it, or the store fails.
pub(crate) async fn run<S: Sink>(
    store: Arc<dyn Store>,
    req: StreamRequest,
    mut sub: Subscription,
    mut settings: StreamSettings,
    out: S,
) {
    let mut w = Writer {
        out,
        buf: String::new(),
        write_timeout: settings.write_timeout,
    };
    let _ = write!(w.buf, "retry: {}\n\n", settings.retry.as_millis());
    let mut cursor = Cursor::default();
    for (channel, pos) in &sub.start {
        cursor.set(channel, *pos);
    }
    let wanted = |event: &str| req.events.as_ref().is_none_or(|set| set.contains(event));

    if let Some(given) = &req.cursor {
        match replay(
            &*store,
            &req,
            given,
            &mut cursor,
            &mut w,
            &wanted,
            settings.deadline,
        )
        .await
        {
            Ok(()) => {}
            Err(ReplayError::Gone) => return,
            Err(ReplayError::Expired) => {
                expired(&mut w, &cursor);
                let _ = w.flush().await;
                return;
            }
            Err(ReplayError::Store(e)) => {
                // Ending the stream makes the client reconnect with its cursor and try again.
                tracing::warn!(error = %e, "replay failed; closing the stream");
                let _ = w.flush().await;
                return;
            }
        }
    }

    let channels: Vec<String> = req.channels.iter().map(|c| json_str(c.as_str())).collect();
    let text = cursor.to_string();
    w.frame(&cursor, "tidings.ready", |b| {
        let _ = write!(
            b,
            r#"{{"cursor":{},"channels":[{}],"heartbeat_ms":{}}}"#,
            json_str(&text),
            channels.join(","),
            settings.heartbeat.as_millis()
        );
    });
    if w.flush().await.is_err() {
        return;
    }

    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.heartbeat,
        settings.heartbeat,
    );
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let expiry = until(settings.deadline);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            biased;
            _ = w.out.closed() => return,
            _ = closed(&mut settings.closing) => {
                let _ = w.flush().await;
                return;
            }
            _ = &mut expiry => {
                expired(&mut w, &cursor);
                let _ = w.flush().await;
                return;
            }
            next = sub.rx.recv() => {
                let Some(d) = next else {
                    let reason = if sub.kicked() {
                        "fell behind the live stream; reconnect with Last-Event-ID (the id of this frame) to resume"
                    } else {
                        "server is shutting down; reconnect with Last-Event-ID to resume"
                    };
                    let text = cursor.to_string();
                    w.frame(&cursor, "tidings.lagged", |b| {
                        let _ = write!(b, r#"{{"reason":{},"cursor":{}}}"#, json_str(reason), json_str(&text));
                    });
                    let _ = w.flush().await;
                    return;
                };
                live(&mut w, &mut cursor, &d, &wanted);
                while w.buf.len() < CHUNK {
                    match sub.rx.try_recv() {
                        Ok(d) => live(&mut w, &mut cursor, &d, &wanted),
                        Err(_) => break,
                    }
                }
                if !w.buf.is_empty() {
                    if w.flush().await.is_err() {
                        return;
                    }
                    // The client just heard from us: the next heartbeat is due an interval
                    // from now, so a busy stream sends none.
                    heartbeat.reset();
                }
            }
            _ = heartbeat.tick() => {
                // An event, not a comment: EventSource hides comments from the page, which then
                // could not tell a dead link (a NAT that dropped the flow, a sleeping laptop)
                // from a quiet channel. Clients that do not know it ignore it.
                w.buf.push_str(PING);
                if w.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The frame that ends a stream whose credential expired; its cursor resumes after what was sent.
fn expired<S: Sink>(w: &mut Writer<S>, cursor: &Cursor) {
    let text = cursor.to_string();
    w.frame(cursor, "tidings.expired", |b| {
        let _ = write!(b, r#"{{"reason":"token expired","cursor":{}}}"#, json_str(&text));
    });
}

/// Completes at `deadline`, or never.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Completes when the server shuts down (or the instance is gone).
async fn closed(closing: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await.map(|_| ());
}

fn live<S: Sink>(w: &mut Writer<S>, cursor: &mut Cursor, d: &Delivery, wanted: &impl Fn(&str) -> bool) {
    let pos = cursor.get(&d.channel).unwrap_or(StreamId::ZERO);
    if d.entry.id <= pos {
        return; // already sent during replay
    }
    cursor.set(&d.channel, d.entry.id);
    if wanted(&d.entry.event) {
        w.entry(cursor, &d.channel, &d.entry);
    }
}

enum ReplayError {
    Gone,
    Store(StoreError),
    /// The credential expired part-way through a long replay.
    Expired,
}

impl From<Gone> for ReplayError {
    fn from(_: Gone) -> Self {
        ReplayError::Gone
    }
}

impl From<StoreError> for ReplayError {
    fn from(e: StoreError) -> Self {
        ReplayError::Store(e)
    }
}

/// Sends every entry after the given cursor, merged across channels in id order, with a reset
/// frame first for each channel whose history after the cursor is gone.
async fn replay<S: Sink>(
    store: &dyn Store,
    req: &StreamRequest,
    given: &Cursor,
    cursor: &mut Cursor,
    w: &mut Writer<S>,
    wanted: &impl Fn(&str) -> bool,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), ReplayError> {
    // Every channel the client has a position for starts there, before any frame is written: a
    // reset frame's id must not carry the live position of a channel replayed after it, or a
    // client resuming from that frame would skip that channel's missed events.
    for channel in &req.channels {
        if let Some(after) = given.get(channel) {
            cursor.set(channel, after);
        }
    }
    let mut states = Vec::new();
    for channel in &req.channels {
        let Some(after) = given.get(channel) else { continue };
        let page = store.replay(channel, after, REPLAY_PAGE).await?;
        let mut state = ReplayState {
            channel: channel.clone(),
            buf: VecDeque::new(),
            after,
            done: page.entries.len() < REPLAY_PAGE,
        };
        if let Some(t) = &page.trimmed {
            state.after = t.resume_from;
            cursor.set(channel, t.resume_from);
            let text = cursor.to_string();
            let oldest = t
                .oldest
                .map_or("null".to_string(), |id| json_str(&id.to_string()));
            w.frame(cursor, "tidings.reset", |b| {
                let _ = write!(
                    b,
                    r#"{{"channel":{},"oldest":{},"cursor":{}}}"#,
                    json_str(channel.as_str()),
                    oldest,
                    json_str(&text)
                );
            });
        } else {
            cursor.set(channel, after);
        }
        if let Some(last) = page.entries.last() {
            state.after = last.id;
        }
        state.buf.extend(page.entries);
        states.push(state);
    }
    loop {
        // Checked between entries (not by racing the replay against a timer, which could drop a
        // chunk mid-send after the cursor moved past it): nothing is sent after expiry.
        if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
            return Err(ReplayError::Expired);
        }
        // Take the oldest head among channels so a replay reads in the order events happened.
        let next = states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.buf.front().map(|e| (e.id, i)))
            .min();
        let Some((_, i)) = next else { break };
        let state = &mut states[i];
        let entry = state.buf.pop_front().expect("head exists");
        if entry.id > cursor.get(&state.channel).unwrap_or(StreamId::ZERO) {
            cursor.set(&state.channel, entry.id);
            if wanted(&entry.event) {
                w.entry(cursor, &state.channel, &entry);
            }
        }
        if state.buf.is_empty() && !state.done {
            fill(store, state).await?;
        }
        w.maybe_flush().await?;
    }
    Ok(())
}

/// Settings for the unit tests: retry 2 s (unless changed), no deadline unless given.
#[cfg(test)]
fn test_settings(
    heartbeat: Duration,
    closing: tokio::sync::watch::Receiver<bool>,
    deadline: Option<tokio::time::Instant>,
) -> StreamSettings {
    StreamSettings {
        heartbeat,
        write_timeout: Duration::from_secs(30),
        retry: Duration::from_secs(2),
        closing,
        deadline,
        permit: crate::limits::Connections::new(&crate::Limits::default())
            .acquire(None)
            .unwrap(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::store::MemoryStore;

    fn ch(name: &str) -> Channel {
        Channel::new(name).unwrap()
    }

    async fn collect_until(rx: &mut mpsc::Receiver<Bytes>, needle: &str) -> String {
        let mut all = String::new();
        while !all.contains(needle) {
            let chunk = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("output within the time limit")
                .expect("stream still open");
            all.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        all
    }

    #[tokio::test(start_paused = true)]
    async fn exact_bytes_then_heartbeat_after_the_interval() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::start(store.clone(), 8);
        let sub = hub.subscribe(&[ch("a"), ch("b")]).await.unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let (_closing, closing) = tokio::sync::watch::channel(false);
        let mut settings = test_settings(Duration::from_secs(15), closing, None);
        settings.retry = Duration::from_millis(1500);
        let req = StreamRequest {
            channels: vec![ch("a"), ch("b")],
            events: None,
            cursor: None,
        };
        tokio::spawn(run(store.clone(), req, sub, settings, tx));
        let start = collect_until(&mut rx, "tidings.ready").await;
        assert_eq!(
            start,
            "retry: 1500\n\nid: a=0-0,b=0-0\nevent: tidings.ready\ndata: {\"cursor\":\"a=0-0,b=0-0\",\"channels\":[\"a\",\"b\"],\"heartbeat_ms\":15000}\n\n"
        );
        // 10 s into the first heartbeat interval, an event: the interval starts again after it.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let id = store
            .append(&ch("b"), "chat.typing", r#"{"user":"ada","active":true}"#)
            .await
            .unwrap();
        let frame = collect_until(&mut rx, "\n\n").await;
        assert_eq!(
            frame,
            format!("id: a=0-0,b={id}\nevent: chat.typing\ndata: {{\"id\":\"{id}\",\"channel\":\"b\",\"event\":\"chat.typing\",\"data\":{{\"user\":\"ada\",\"active\":true}}}}\n\n")
        );
        // So the heartbeat comes 15 s after the event, not 5 s: a busy stream sends none.
        let before = tokio::time::Instant::now();
        assert_eq!(
            collect_until(&mut rx, "tidings.ping").await,
            "event: tidings.ping\ndata: {}\n\n"
        );
        let waited = before.elapsed();
        assert!(
            waited >= Duration::from_secs(14) && waited <= Duration::from_secs(16),
            "heartbeat after {waited:?}"
        );
        let before = tokio::time::Instant::now();
        collect_until(&mut rx, "tidings.ping").await;
        let waited = before.elapsed();
        assert!(
            waited >= Duration::from_secs(14) && waited <= Duration::from_secs(16),
            "second heartbeat after {waited:?}"
        );
    }

    /// A sink whose writes never complete: a client that stopped reading with its buffers full.
    struct Stuck {
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Sink for Stuck {
        async fn send(&mut self, _chunk: Bytes) -> Result<(), Gone> {
            self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending().await
        }
        async fn closed(&mut self) {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_ends_the_stream_after_the_write_timeout() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::start(store.clone(), 8);
        let sub = hub.subscribe(&[ch("a")]).await.unwrap();
        let (_closing, closing) = tokio::sync::watch::channel(false);
        let mut settings = test_settings(Duration::from_secs(15), closing, None);
        settings.write_timeout = Duration::from_secs(7);
        let req = StreamRequest {
            channels: vec![ch("a")],
            events: None,
            cursor: None,
        };
        let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let out = Stuck {
            writes: writes.clone(),
        };
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(run(store.clone(), req, sub, settings, out));
        // The first write (retry + ready) never completes: the stream ends 7 s later, and with
        // it the task that holds the connection permit.
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the stream ended")
            .unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(7) && took < Duration::from_secs(8),
            "ended after {took:?}"
        );
        assert_eq!(writes.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_kicked_subscriber_gets_a_lagged_frame_with_its_cursor() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::start(store.clone(), 1);
        let sub = hub.subscribe(&[ch("a")]).await.unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let (_closing, closing) = tokio::sync::watch::channel(false);
        let settings = test_settings(Duration::from_secs(15), closing, None);
        let req = StreamRequest {
            channels: vec![ch("a")],
            events: None,
            cursor: None,
        };
        // Fill the subscriber's queue before the connection task reads it.
        let first = store.append(&ch("a"), "e", "1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 2..5 {
            store.append(&ch("a"), "e", &i.to_string()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokio::spawn(run(store.clone(), req, sub, settings, tx));
        let all = collect_until(&mut rx, "tidings.lagged").await;
        assert!(
            all.contains(&format!("id: a={first}\nevent: tidings.lagged\n")),
            "{all}"
        );
        assert_eq!(
            all.matches("event: e\n").count(),
            1,
            "only the queued entry was sent: {all}"
        );
        assert!(
            rx.recv().await.is_none(),
            "the stream ends after the lagged frame"
        );
    }

    #[tokio::test]
    async fn a_credential_that_expires_mid_replay_stops_it_with_the_cursor_of_what_was_sent() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(crate::Retention::default().max_len(5000)));
        let a = ch("a");
        for i in 0..3000 {
            store.append(&a, "e", &format!("{{\"n\":{i}}}")).await.unwrap();
        }
        let hub = Hub::start(store.clone(), 8);
        let sub = hub.subscribe(std::slice::from_ref(&a)).await.unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let (_closing, closing) = tokio::sync::watch::channel(false);
        let settings = test_settings(
            Duration::from_secs(15),
            closing,
            Some(tokio::time::Instant::now() + Duration::from_millis(300)),
        );
        let req = StreamRequest {
            channels: vec![a.clone()],
            events: None,
            cursor: Some(Cursor::parse("a=0-0").unwrap()),
        };
        tokio::spawn(run(store.clone(), req, sub, settings, tx));
        // A slow reader: the replay cannot finish before the deadline.
        let mut all = String::from_utf8(rx.recv().await.unwrap().to_vec()).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        while let Some(chunk) = rx.recv().await {
            all.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        let sent = all.matches("event: e\n").count();
        assert!(sent > 0 && sent < 3000, "{sent} entries sent");
        assert!(!all.contains("tidings.ready"), "the replay did not complete");
        let tail = all.rsplit("\n\n").nth(1).unwrap();
        assert!(tail.contains("event: tidings.expired"), "{tail}");
        // The expired frame resumes right after the last entry sent.
        let last_sent = all
            .split("\n\n")
            .filter(|f| f.contains("event: e\n"))
            .last()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string();
        assert!(tail.starts_with(&last_sent), "{last_sent} / {tail}");
    }
}

#[cfg(test)]
mod shutdown_tests {
    use super::*;
    use crate::hub::Hub;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn closing_ends_an_idle_stream() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let hub = Hub::start(store.clone(), 4);
        let a = Channel::new("a").unwrap();
        let sub = hub.subscribe(std::slice::from_ref(&a)).await.unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let (closing_tx, closing) = tokio::sync::watch::channel(false);
        let settings = test_settings(Duration::from_secs(3600), closing, None);
        let req = StreamRequest {
            channels: vec![a],
            events: None,
            cursor: None,
        };
        let task = tokio::spawn(run(store, req, sub, settings, tx));
        assert!(rx.recv().await.is_some(), "start of the stream");
        closing_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stream task ends")
            .unwrap();
        assert!(rx.recv().await.is_none());
    }
}
