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

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::mpsc;

use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::frame::Frame;
use crate::hub::{Known, Subscription};
use crate::session::{closed, until, Gone, ReplayError, Session, Transport};
use crate::store::Store;

/// Frames are gathered into chunks of about this size before they are written.
pub(crate) const CHUNK: usize = 32 * 1024;

/// What one SSE connection asked for, already checked.
pub(crate) struct StreamRequest {
    pub channels: Vec<Channel>,
    pub events: Option<HashSet<String>>,
    /// `?filter=`, checked against the schema (an enforced filter joins it at open).
    pub filter: Option<crate::filter::Filter>,
    pub cursor: Option<Cursor>,
    /// Which event names the loaded schema knows: others are skipped.
    pub known: Known,
    /// `?presence=`: join the presence of the channels that have it, with this data (`None`:
    /// none). `None` outside: do not join.
    pub presence: Option<Option<serde_json::Value>>,
}

pub(crate) struct StreamSettings {
    /// The request's `events` and `filter` (with what its credential imposes), as the hub
    /// applies them.
    pub want: crate::session::Events,
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
    /// The channels with presence, whose frames the stream gets after `tidings.ready`, and the
    /// presence the stream joined (left when it ends). `None` without presence channels.
    pub presence: Option<
        Box<(
            crate::presence::Presence,
            Vec<Channel>,
            crate::session::SessionPresence,
        )>,
    >,
    /// The standalone server counts the stream as an open connection until it ends (its
    /// shutdown waits for it).
    #[allow(dead_code, reason = "held, never read: dropping it ends the count")]
    pub hold: Option<crate::server::OpenGuard>,
}

/// Where a connection's bytes go: hyper's response body, or a socket written directly.
pub(crate) trait Sink: Send + 'static {
    /// Writes one chunk; `Err` when the client is gone.
    fn send(&mut self, chunk: Bytes) -> impl std::future::Future<Output = Result<(), Gone>> + Send;
    /// Completes when the client is gone.
    fn closed(&mut self) -> impl std::future::Future<Output = ()> + Send;
}

/// The hyper path: chunks go into the response body's channel.
impl Sink for mpsc::Sender<Bytes> {
    async fn send(&mut self, chunk: Bytes) -> Result<(), Gone> {
        mpsc::Sender::send(self, chunk).await.map_err(|_| Gone)
    }

    async fn closed(&mut self) {
        mpsc::Sender::closed(self).await
    }
}

/// The SSE transport: frames as event-stream text, gathered into chunks.
pub(crate) struct SseOut<S> {
    out: S,
    buf: String,
    /// A chunk that cannot be written within this is a client that stopped reading, or a peer
    /// that is gone without a word: treated as gone, so the stream ends and frees its slot.
    write_timeout: Duration,
}

impl<S: Sink> Transport for SseOut<S> {
    fn push(&mut self, frame: Frame<'_>) {
        frame.write_sse(&mut self.buf);
    }

    fn pending(&self) -> usize {
        self.buf.len()
    }

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
}

/// Runs one connection until the client goes away, the hub drops it, or the store fails.
pub(crate) async fn run<S: Sink>(
    store: std::sync::Arc<dyn Store>,
    req: StreamRequest,
    mut sub: Subscription,
    mut settings: StreamSettings,
    out: S,
) {
    let out = SseOut {
        out,
        buf: String::new(),
        write_timeout: settings.write_timeout,
    };
    let mut s = Session::new(store, req.known, out);
    s.send(Frame::Retry(settings.retry));
    let mut start = std::mem::take(&mut sub.start);
    start.retain(|(c, _)| c.presence_of().is_none());
    let presence = settings.presence.take().map(|b| {
        let (svc, channels, part) = *b;
        s.adopt_presence(Box::new(part));
        (svc, channels)
    });
    let events = settings.want.take();
    match s
        .join(&start, events, req.cursor.as_ref(), settings.deadline)
        .await
    {
        Ok(()) => {}
        Err(ReplayError::Gone) => return,
        Err(ReplayError::Expired) => {
            s.out.push(Frame::Expired { cursor: &s.cursor });
            let _ = s.out.flush().await;
            return;
        }
        Err(ReplayError::Store(e)) => {
            // Ending the stream makes the client reconnect with its cursor and try again.
            tracing::warn!(error = %e, "replay failed; closing the stream");
            let _ = s.out.flush().await;
            return;
        }
    }
    drop(start);

    s.out.push(Frame::Ready {
        cursor: &s.cursor,
        channels: &req.channels,
        heartbeat: settings.heartbeat,
        reference: None,
    });
    if let Some((svc, channels)) = &presence {
        for channel in channels {
            // Boxed: a cold path, kept out of every stream's future.
            if let Err(e) = Box::pin(s.watch_presence(svc, "", channel)).await {
                // Without the snapshot the page's member list would be wrong: end the stream,
                // and let the client reconnect with its cursor.
                tracing::warn!(error = %e, "presence snapshot failed; closing the stream");
                let _ = s.out.flush().await;
                return;
            }
        }
    }
    drop(presence);
    if s.out.flush().await.is_err() {
        return;
    }
    drop(req.channels);

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
            _ = s.out.out.closed() => return,
            _ = closed(&mut settings.closing) => {
                let _ = s.out.flush().await;
                return;
            }
            _ = &mut expiry => {
                s.out.push(Frame::Expired { cursor: &s.cursor });
                let _ = s.out.flush().await;
                return;
            }
            next = sub.recv() => {
                let Some(d) = next else {
                    let reason = if sub.kicked() {
                        "fell behind the live stream; reconnect with Last-Event-ID (the id of this frame) to resume"
                    } else {
                        "server is shutting down; reconnect with Last-Event-ID to resume"
                    };
                    s.out.push(Frame::Lagged { cursor: &s.cursor, reason });
                    let _ = s.out.flush().await;
                    return;
                };
                s.live_from(&mut sub, &d);
                if s.out.pending() > 0 {
                    if s.out.flush().await.is_err() {
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
                s.out.push(Frame::Ping);
                if s.out.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}
