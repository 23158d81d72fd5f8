//! The session: what one connection has been told, whatever carries it.
//!
//! A session holds the connection's cursor (one position per channel it watches) and the events
//! each channel wants, replays history from a client's cursor, and turns live entries from the
//! hub into frames. It writes [`Frame`]s to a [`Transport`]: the SSE stream (`sse`) and the
//! WebSocket connection (`ws`) are two transports of the same session, so both answer a cursor
//! the same way, frame for frame.
//!
//! Channels can join a live session (a WebSocket `subscribe`) and leave it: each joins with its
//! position at registration in the hub, replays from the client's cursor up to at least there,
//! and is live from then on; the hub's entries after that position arrive in order, and the
//! overlap is dropped by id.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;

use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::frame::Frame;
use crate::hub::{Delivery, Known};
use crate::id::{Epoch, Position};
use crate::presence::{Presence, PresenceError};
use crate::store::{skip, Entry, Store, StoreError, Trimmed, PRESENCE_JOIN, PRESENCE_LEAVE};

/// Entries read per channel per replay page.
const REPLAY_PAGE: usize = 500;

/// The client went away (or stopped reading).
pub(crate) struct Gone;

/// Where a session's frames go: an encoder and the connection under it.
pub(crate) trait Transport: Send {
    /// Encodes `frame` into what is waiting to be written.
    fn push(&mut self, frame: Frame<'_>);
    /// Bytes waiting to be written.
    fn pending(&self) -> usize;
    /// Writes what is waiting; `Err` when the client is gone.
    fn flush(&mut self) -> impl Future<Output = Result<(), Gone>> + Send;
}

/// Which events of a channel a subscriber wants; `None`: every event.
pub(crate) type Events = Option<Arc<Want>>;

/// A subscription's selection: event names, and a filter on payloads.
#[derive(Default)]
pub(crate) struct Want {
    /// Only these events (`None`: any).
    pub events: Option<HashSet<String>>,
    /// Only events that pass (the client's filter, and one its credential imposes).
    pub filter: Option<crate::filter::Filter>,
}

impl Want {
    /// `None` when it selects everything.
    pub fn new(events: Option<HashSet<String>>, filter: Option<crate::filter::Filter>) -> Events {
        (events.is_some() || filter.is_some()).then(|| Arc::new(Want { events, filter }))
    }

    /// Whether `entry` of `channel` is selected. A filter reads the payload parsed: from
    /// `parsed` (shared by every subscriber of a live delivery, so parsed once) or here.
    pub fn admits(
        &self,
        channel: &Channel,
        entry: &Entry,
        parsed: Option<&std::sync::OnceLock<Option<serde_json::Value>>>,
    ) -> bool {
        if self
            .events
            .as_ref()
            .is_some_and(|set| !set.contains(&*entry.event))
        {
            return false;
        }
        let Some(filter) = &self.filter else { return true };
        let local;
        let data = match parsed {
            Some(cell) => cell.get_or_init(|| entry.parsed()).as_ref(),
            None => {
                local = entry.parsed();
                local.as_ref()
            }
        };
        data.is_some_and(|d| filter.matches(channel.as_str(), &entry.event, d))
    }
}

/// One connection's cursor and channels, writing to transport `T`.
pub(crate) struct Session<T> {
    store: Arc<dyn Store>,
    known: Known,
    /// The position of every watched channel: what the client has been told, or has been
    /// skipped past (filtered out, unreadable, unknown to the schema).
    pub cursor: Cursor,
    /// The channels watched, with the events each wants.
    watched: Vec<(Channel, Events)>,
    /// Frames are written here.
    pub out: T,
    /// True once a frame was pushed since [`Session::quiet`] was last asked.
    spoke: bool,
    /// Presence watched and joined; `None` for most connections (boxed: an idle stream on a
    /// channel without presence pays one pointer).
    presence: Option<Box<SessionPresence>>,
}

/// A session's part in presence.
pub(crate) struct SessionPresence {
    svc: Presence,
    /// This connection's key in presence (unique across nodes).
    pub conn: String,
    /// Channels whose presence frames this connection gets.
    watched: Vec<Channel>,
    /// Channels this connection is a member of.
    joined: Vec<Channel>,
}

impl SessionPresence {
    /// Presence for a connection named `connection` on this node.
    pub fn new(svc: &Presence, connection: &str) -> Self {
        SessionPresence {
            conn: svc.conn_key(connection),
            svc: svc.clone(),
            watched: Vec::new(),
            joined: Vec::new(),
        }
    }

    /// Notes that the connection joined `channel`'s presence (the caller joined it).
    pub fn joined(&mut self, channel: Channel) {
        if !self.joined.contains(&channel) {
            self.joined.push(channel);
        }
    }
}

impl Drop for SessionPresence {
    fn drop(&mut self) {
        for channel in &self.watched {
            self.svc.unwatch(channel);
        }
        // The connection went (a closed tab): its members leave now, not when they lapse.
        let joined = std::mem::take(&mut self.joined);
        if joined.is_empty() {
            return;
        }
        let (svc, conn) = (self.svc.clone(), std::mem::take(&mut self.conn));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for channel in joined {
                    if let Err(e) = svc.leave(&channel, &conn).await {
                        tracing::warn!(error = %e, %channel, "could not leave presence; the member lapses");
                    }
                }
            });
        }
    }
}

/// Why a replay stopped.
pub(crate) enum ReplayError {
    /// The client went away.
    Gone,
    /// The store failed; the client should resume from its cursor later.
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

/// One channel's replay in progress.
struct ReplayState {
    channel: Channel,
    buf: VecDeque<Entry>,
    /// Where the next page starts.
    after: Position,
    done: bool,
}

impl<T: Transport> Session<T> {
    /// A session watching nothing yet.
    pub fn new(store: Arc<dyn Store>, known: Known, out: T) -> Self {
        Session {
            store,
            known,
            cursor: Cursor::default(),
            watched: Vec::new(),
            out,
            spoke: false,
            presence: None,
        }
    }

    /// The session's presence part, made on first use for `connection`.
    pub fn presence(&mut self, svc: &Presence, connection: &str) -> &mut SessionPresence {
        self.presence
            .get_or_insert_with(|| Box::new(SessionPresence::new(svc, connection)))
    }

    /// Takes over a presence part made before the session (an SSE stream joins before it
    /// answers, so a refusal is still an HTTP error).
    pub fn adopt_presence(&mut self, part: Box<SessionPresence>) {
        self.presence = Some(part);
    }

    /// Starts sending `channel`'s presence frames (its presence stream joined in the hub), and
    /// sends its snapshot.
    ///
    /// # Errors
    /// [`StoreError`] when the snapshot cannot be read.
    pub async fn watch_presence(
        &mut self,
        svc: &Presence,
        connection: &str,
        channel: &Channel,
    ) -> Result<(), StoreError> {
        let part = self.presence(svc, connection);
        if !part.watched.contains(channel) {
            part.watched.push(channel.clone());
            svc.watch(channel);
        }
        let snapshot = svc.snapshot(channel).await?;
        self.send(Frame::PresenceSnapshot { snapshot: &snapshot });
        Ok(())
    }

    /// Joins `channel`'s presence as `identity` with `data`.
    ///
    /// # Errors
    /// [`PresenceError`]: no presence there, data too large, the channel full, the store.
    pub async fn join_presence(
        &mut self,
        svc: &Presence,
        connection: &str,
        channel: &Channel,
        identity: &crate::auth::Identity,
        data: Option<&serde_json::Value>,
    ) -> Result<(), PresenceError> {
        let part = self.presence(svc, connection);
        let conn = part.conn.clone();
        svc.join(channel, identity, &conn, data).await?;
        part.joined(channel.clone());
        Ok(())
    }

    /// Leaves `channel`'s presence; `false` when the connection was not a member there.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub async fn leave_presence(&mut self, channel: &Channel) -> Result<bool, StoreError> {
        let Some(part) = self.presence.as_mut() else {
            return Ok(false);
        };
        let Some(i) = part.joined.iter().position(|c| c == channel) else {
            return Ok(false);
        };
        part.joined.remove(i);
        let conn = part.conn.clone();
        part.svc.leave(channel, &conn).await?;
        Ok(true)
    }

    /// True when this connection is a member of `channel`'s presence.
    pub fn is_member(&self, channel: &Channel) -> bool {
        self.presence.as_ref().is_some_and(|p| p.joined.contains(channel))
    }

    /// Pushes a frame to the transport.
    pub fn send(&mut self, frame: Frame<'_>) {
        self.spoke = true;
        self.out.push(frame);
    }

    /// Notes that a frame was pushed to `out` directly (one that borrows the cursor).
    pub fn spoke(&mut self) {
        self.spoke = true;
    }

    /// True when no frame was pushed since the last call: the connection has been quiet.
    pub fn quiet(&mut self) -> bool {
        !std::mem::take(&mut self.spoke)
    }

    /// True when `channel` is watched.
    pub fn watches(&self, channel: &Channel) -> bool {
        self.watched.iter().any(|(c, _)| c == channel)
    }

    /// Channels watched.
    pub fn len(&self) -> usize {
        self.watched.len()
    }

    /// Watches `start`'s channels (each with its position at registration in the hub) for
    /// `events`, then replays whatever the client's `given` cursor says it missed on them:
    /// entries merged across channels in id order, with a reset frame first for each channel
    /// whose history after the cursor is gone. Channels `given` does not name start live.
    ///
    /// # Errors
    /// [`ReplayError`]: the client left, the store failed, or `deadline` passed mid-replay.
    /// The channels stay watched.
    pub async fn join(
        &mut self,
        start: &[(Channel, Position)],
        events: Events,
        given: Option<&Cursor>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), ReplayError> {
        for (channel, pos) in start {
            // Every channel the client has a position for starts there, before any frame is
            // written: a reset frame's id must not carry the live position of a channel
            // replayed after it, or a client resuming from that frame would skip that
            // channel's missed events.
            let from = given.and_then(|g| g.get(channel)).unwrap_or(*pos);
            self.cursor.set(channel, from);
            self.watched.push((channel.clone(), events.clone()));
        }
        let Some(given) = given else { return Ok(()) };
        let mut states = Vec::new();
        for (channel, _) in start {
            let Some(after) = given.get(channel) else { continue };
            let mut state = ReplayState {
                channel: channel.clone(),
                buf: VecDeque::new(),
                after,
                done: false,
            };
            let trimmed = fill(&*self.store, &mut state).await?;
            match &trimmed {
                Some(t) => self.reset(channel, t, state.after.epoch),
                // The position holds; it now names the channel's epoch.
                None => self
                    .cursor
                    .set(channel, Position::written(after.id, state.after.epoch)),
            }
            states.push(state);
        }
        loop {
            // Checked between entries (not by racing the replay against a timer, which could
            // drop a chunk mid-send after the cursor moved past it): nothing is sent after
            // expiry.
            if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
                return Err(ReplayError::Expired);
            }
            // Take the oldest head among channels so a replay reads in the order events
            // happened.
            let next = states
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.buf.front().map(|e| (e.id, i)))
                .min();
            let Some((_, i)) = next else { break };
            let state = &mut states[i];
            let entry = state.buf.pop_front().expect("head exists");
            let pos = self.cursor.get(&state.channel).unwrap_or(Position::ZERO);
            if entry.id > pos.id {
                // The cursor moves past entries that are not sent too (filtered out,
                // unreadable, unknown to the schema), so a resume does not read them again.
                self.cursor
                    .set(&state.channel, Position::new(entry.id, state.after.epoch));
                let wanted = self.wants(&state.channel, &entry, None);
                if wanted && skip::deliverable(state.channel.as_str(), &entry, &*self.known) {
                    self.spoke = true;
                    self.out.push(Frame::Event {
                        cursor: &self.cursor,
                        channel: &state.channel,
                        entry: &entry,
                    });
                }
            }
            if state.buf.is_empty() && !state.done {
                if let Some(t) = fill(&*self.store, state).await? {
                    // The history moved on under a long replay: say so before what follows.
                    let (channel, epoch) = (state.channel.clone(), state.after.epoch);
                    self.reset(&channel, &t, epoch);
                }
            }
            if self.out.pending() >= crate::sse::CHUNK {
                self.out.flush().await?;
            }
        }
        Ok(())
    }

    /// Stops watching `channels`: their positions leave the cursor, and their entries still
    /// queued are dropped.
    pub fn leave(&mut self, channels: &[Channel]) {
        self.watched.retain(|(c, _)| !channels.contains(c));
        for channel in channels {
            self.cursor.remove(channel);
        }
        if let Some(part) = self.presence.as_mut() {
            for channel in channels {
                if let Some(i) = part.watched.iter().position(|c| c == channel) {
                    part.watched.remove(i);
                    part.svc.unwatch(channel);
                }
            }
        }
    }

    /// Writes `first`, just received from `sub`, and whatever else is queued there up to a
    /// chunk. Before each entry the cursor moves past what the hub left out for this
    /// connection's filters; after the last, too, so the next frame carries it.
    pub fn live_from(&mut self, sub: &mut crate::hub::Subscription, first: &Delivery) {
        sub.caught_up(Some(&first.channel), |c, p| self.passed(c, p));
        self.live(first);
        while self.out.pending() < crate::sse::CHUNK {
            let Some(d) = sub.try_recv() else { break };
            sub.caught_up(Some(&d.channel), |c, p| self.passed(c, p));
            self.live(&d);
        }
        sub.caught_up(None, |c, p| self.passed(c, p));
    }

    /// The hub is at `pos` of `channel`, and this connection has taken every entry up to there
    /// that it wants (its filters left the others out).
    fn passed(&mut self, channel: &Channel, pos: Position) {
        if self.cursor.get(channel).is_some_and(|at| at.id < pos.id) {
            self.cursor.set(channel, pos);
        }
    }

    /// Writes a live entry, unless it was replayed already or its channel is no longer watched.
    /// The hub hands out only readable entries of known events.
    fn live(&mut self, d: &Delivery) {
        if let Some(channel) = d.channel.presence_of() {
            let watched = self
                .presence
                .as_ref()
                .is_some_and(|p| p.watched.contains(&channel));
            if watched {
                // Checked once per delivery (the parse is shared): an object, on one line.
                let compact;
                let member = match d.parsed.get_or_init(|| d.entry.parsed()) {
                    Some(v @ serde_json::Value::Object(_)) if d.entry.data.contains(['\n', '\r']) => {
                        compact = v.to_string();
                        Some(compact.as_str())
                    }
                    Some(serde_json::Value::Object(_)) => Some(&*d.entry.data),
                    _ => None,
                };
                self.spoke = true;
                match &*d.entry.event {
                    PRESENCE_JOIN => self.out.push(Frame::PresenceJoin {
                        channel: &channel,
                        member,
                    }),
                    PRESENCE_LEAVE => self.out.push(Frame::PresenceLeave {
                        channel: &channel,
                        member,
                    }),
                    _ => {}
                }
            }
            return;
        }
        let Some(pos) = self.cursor.get(&d.channel) else {
            return; // left the channel; the entry was queued before
        };
        if d.entry.id <= pos.id {
            return; // already sent during replay
        }
        self.cursor.set(&d.channel, Position::new(d.entry.id, d.epoch));
        if self.wants(&d.channel, &d.entry, Some(&d.parsed)) {
            self.spoke = true;
            self.out.push(Frame::Event {
                cursor: &self.cursor,
                channel: &d.channel,
                entry: &d.entry,
            });
        }
    }

    /// Whether `entry` of `channel` is wanted (see [`Want::admits`]).
    fn wants(
        &self,
        channel: &Channel,
        entry: &Entry,
        parsed: Option<&std::sync::OnceLock<Option<serde_json::Value>>>,
    ) -> bool {
        let Some((_, want)) = self.watched.iter().find(|(c, _)| c == channel) else {
            return false;
        };
        want.as_ref().is_none_or(|w| w.admits(channel, entry, parsed))
    }

    /// Writes the reset frame for `channel`, whose history after the cursor is gone, and moves
    /// the cursor to where reading goes on.
    fn reset(&mut self, channel: &Channel, t: &Trimmed, epoch: Option<Epoch>) {
        self.cursor.set(channel, Position::written(t.resume_from, epoch));
        self.spoke = true;
        self.out.push(Frame::Reset {
            cursor: &self.cursor,
            channel,
            oldest: t.oldest,
            reason: t.reason,
        });
    }
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

/// Completes at `deadline`, or never.
pub(crate) async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Completes when the server shuts down (or the instance is gone).
pub(crate) async fn closed(closing: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await.map(|_| ());
}
