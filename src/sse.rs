//! The SSE connection: replay from a cursor, then live events, one `id:` cursor for all channels.
//!
//! Frames (every field value is checked to be one line before it is written):
//!
//! ```text
//! retry: 2000                           once, first: the reconnect delay hint
//!
//! id: room:1=1700000000000-0@5f3a09c1,room:2=0-0
//! event: chat.message
//! data: {"id":"1700000000000-0","channel":"room:1","event":"chat.message","data":{…}}
//!
//! id: room:1=…,room:2=…                 after history is replayed: the cursor so far, and
//! event: tidings.ready                  the heartbeat interval (a client that hears nothing
//! data: {"cursor":"…","channels":["room:1","room:2"],"heartbeat_ms":15000}   for longer knows)
//!
//! id: …                                 history after the client's cursor is gone: trimmed,
//! event: tidings.reset                  or replaced (another epoch), or the cursor is past the end
//! data: {"channel":"room:1","oldest":"1700000000005-0","cursor":"…","reason":"trimmed"}
//!
//! event: tidings.ping                  every heartbeat interval without other frames: an event,
//! data: {}                              so a browser's EventSource shows it to the page
//!
//! id: …                                 the client fell behind and is disconnected
//! event: tidings.lagged
//! data: {"reason":"…","cursor":"…"}
//! ```

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::mpsc;

use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::frame::Frame;
use crate::hub::{Delivery, Known, Subscription};
use crate::id::{Epoch, Position};
use crate::store::{skip, Entry, Store, StoreError, Trimmed};

/// Entries read per channel per replay page.
const REPLAY_PAGE: usize = 500;
/// Frames are gathered into chunks of about this size before they are written.
const CHUNK: usize = 32 * 1024;

/// What one SSE connection asked for, already checked.
pub(crate) struct StreamRequest {
    pub channels: Vec<Channel>,
    pub events: Option<HashSet<String>>,
    pub cursor: Option<Cursor>,
    /// Which event names the loaded schema knows: others are skipped.
    pub known: Known,
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

    /// Adds a frame to the buffer, as SSE text.
    fn send(&mut self, frame: Frame<'_>) {
        frame.write_sse(&mut self.buf);
    }
}

/// One channel's replay in progress.
struct ReplayState {
    channel: Channel,
    buf: VecDeque<Entry>,
    /// Where the next page starts.
    after: Position,
    done: bool,
}

/// Reads the next page of a channel's replay. Returns what was lost when the history moved on
/// under a long replay (trimmed past the page, or replaced): the caller then sends a reset.
async fn fill(store: &dyn Store, r: &mut ReplayState) -> Result<Option<Trimmed>, StoreError> {
    let page = store.replay(&r.channel, r.after, REPLAY_PAGE).await?;
    r.done = page.entries.len() < REPLAY_PAGE;
    let from = page.trimmed.as_ref().map_or(r.after.id, |t| t.resume_from);
    r.after = Position::new(page.entries.last().map_or(from, |e| e.id), page.epoch);
    r.buf.extend(page.entries);
    Ok(page.trimmed)
}

/// Writes the reset frame for `channel`, whose history after the cursor is gone, and moves the
/// cursor to where reading goes on.
fn reset<S: Sink>(
    w: &mut Writer<S>,
    cursor: &mut Cursor,
    channel: &Channel,
    t: &Trimmed,
    epoch: Option<Epoch>,
) {
    cursor.set(channel, Position::written(t.resume_from, epoch));
    w.send(Frame::Reset {
        cursor,
        channel,
        oldest: t.oldest,
        reason: t.reason,
    });
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
    w.send(Frame::Retry(settings.retry));
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

    w.send(Frame::Ready {
        cursor: &cursor,
        channels: &req.channels,
        heartbeat: settings.heartbeat,
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
                    w.send(Frame::Lagged { cursor: &cursor, reason });
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
                w.send(Frame::Ping);
                if w.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The frame that ends a stream whose credential expired; its cursor resumes after what was sent.
fn expired<S: Sink>(w: &mut Writer<S>, cursor: &Cursor) {
    w.send(Frame::Expired { cursor });
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

/// Writes a live entry. The hub hands out only readable entries of known events.
fn live<S: Sink>(w: &mut Writer<S>, cursor: &mut Cursor, d: &Delivery, wanted: &impl Fn(&str) -> bool) {
    let pos = cursor.get(&d.channel).unwrap_or(Position::ZERO);
    if d.entry.id <= pos.id {
        return; // already sent during replay
    }
    cursor.set(&d.channel, Position::new(d.entry.id, d.epoch));
    if wanted(&d.entry.event) {
        w.send(Frame::Event {
            cursor,
            channel: &d.channel,
            entry: &d.entry,
        });
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
        let mut state = ReplayState {
            channel: channel.clone(),
            buf: VecDeque::new(),
            after,
            done: false,
        };
        let trimmed = fill(store, &mut state).await?;
        match &trimmed {
            Some(t) => reset(w, cursor, channel, t, state.after.epoch),
            // The position holds; it now names the channel's epoch.
            None => cursor.set(channel, Position::written(after.id, state.after.epoch)),
        }
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
        let pos = cursor.get(&state.channel).unwrap_or(Position::ZERO);
        if entry.id > pos.id {
            // The cursor moves past entries that are not sent too (filtered out, unreadable,
            // unknown to the schema), so a resume does not read them again.
            cursor.set(&state.channel, Position::new(entry.id, state.after.epoch));
            if wanted(&entry.event) && skip::deliverable(state.channel.as_str(), &entry, &*req.known) {
                w.send(Frame::Event {
                    cursor,
                    channel: &state.channel,
                    entry: &entry,
                });
            }
        }
        if state.buf.is_empty() && !state.done {
            if let Some(t) = fill(store, state).await? {
                // The history moved on under a long replay: say so before what follows.
                reset(w, cursor, &state.channel, &t, state.after.epoch);
            }
        }
        w.maybe_flush().await?;
    }
    Ok(())
}
