//! One conformance suite for both transports: every case runs over Server-Sent Events
//! (`GET /realtime`) and over WebSocket (`GET /ws`), through a client that opens some channels
//! (optionally from a cursor) and yields the frames normalized (`event`, `ready`, `reset`,
//! `lagged`, `expired`, each with its cursor). The two transports are encoders of one session,
//! so they must answer every cursor alike, frame for frame and byte for byte in the cursors.

#[macro_use]
#[allow(unused_macros)]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use serde_json::{json, Value};
use support::{by_id, hs256, msg, unix_now, Backend, SseReader, TestServer, WsClient, JWT_SECRET};
use tidings::{Channel, Config, Cursor, JwtAuthorizer, MemoryStore, Retention, StreamId};
use tidings_test_events::ChatMessage;

/// Generates one test per transport for each listed `async fn(Transport)`. Single-threaded, so
/// that a burst emitted without yielding reaches the hub as one batch (the lagged case).
macro_rules! over_both_transports {
    ($($name:ident),* $(,)?) => {
        mod sse {
            $(
                #[tokio::test(flavor = "current_thread")]
                async fn $name() {
                    super::$name(super::Transport::Sse).await;
                }
            )*
        }
        mod ws {
            $(
                #[tokio::test(flavor = "current_thread")]
                async fn $name() {
                    super::$name(super::Transport::Ws).await;
                }
            )*
        }
    };
}

over_both_transports!(
    ready_then_live_events_carry_the_connection_cursor,
    resume_of_three_interleaved_channels_on_memory,
    resume_of_three_interleaved_channels_on_redis,
    trimmed_history_sends_reset_then_what_is_held,
    a_lagging_client_is_dropped_and_resumes_exactly,
    an_expiring_token_ends_with_expired_whose_cursor_resumes,
);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Sse,
    Ws,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Event,
    Ready,
    Reset,
    Lagged,
    Expired,
}

/// A frame as either transport gives it: its kind, the connection's cursor with it (SSE `id:`,
/// the WebSocket `cursor` field), and its body without what only one transport has (the
/// WebSocket `type` and `ref`, and an event's `cursor` field), which is then the SSE `data:`.
#[derive(Clone, Debug, PartialEq)]
struct Got {
    kind: Kind,
    cursor: String,
    body: Value,
}

impl Got {
    fn channel(&self) -> &str {
        self.body["channel"].as_str().unwrap()
    }

    fn id(&self) -> StreamId {
        self.body["id"].as_str().unwrap().parse().unwrap()
    }

    fn text(&self) -> &str {
        self.body["data"]["text"].as_str().unwrap()
    }

    /// `(channel, id, text)` of an event.
    fn ev(&self) -> Ev {
        assert_eq!(self.kind, Kind::Event, "{self:?}");
        (self.channel().to_string(), self.id(), self.text().to_string())
    }
}

type Ev = (String, StreamId, String);

enum Conn {
    Sse(SseReader),
    Ws(Box<WsClient>),
}

/// A client of either transport, watching a fixed set of channels.
struct Client {
    conn: Conn,
}

impl Client {
    /// Opens `channels` at `base`, resuming from `cursor` when given (SSE: `Last-Event-ID`;
    /// WebSocket: the subscribe's `cursor`), with `token` as `?token=` when given.
    async fn open(
        t: Transport,
        base: &str,
        channels: &[&str],
        cursor: Option<&str>,
        token: Option<&str>,
    ) -> Client {
        match t {
            Transport::Sse => {
                let mut params = vec![("channel", channels.join(","))];
                if let Some(token) = token {
                    params.push(("token", token.to_string()));
                }
                let url = reqwest::Url::parse_with_params(&format!("{base}/realtime"), params).unwrap();
                let mut sse = SseReader::open(url.as_str(), cursor).await;
                let first = sse.next().await.expect("the retry frame");
                assert_eq!(first.retry.as_deref(), Some("2000"), "{first:?}");
                Client { conn: Conn::Sse(sse) }
            }
            Transport::Ws => {
                let query = token.map_or(String::new(), |t| format!("?token={t}"));
                let mut ws = WsClient::connect(base, &query).await;
                let welcome = ws.next().await.expect("welcome");
                assert_eq!(welcome["type"], "welcome", "{welcome}");
                let mut subscribe = json!({ "type": "subscribe", "ref": "s", "channels": channels });
                if let Some(cursor) = cursor {
                    subscribe["cursor"] = json!(cursor);
                }
                ws.send(subscribe).await;
                let subscribed = ws.next().await.expect("subscribed");
                assert_eq!(
                    subscribed,
                    json!({ "type": "subscribed", "ref": "s", "channels": channels }),
                );
                Client {
                    conn: Conn::Ws(Box::new(ws)),
                }
            }
        }
    }

    /// The next frame, or `None` once the connection ended.
    async fn next(&mut self) -> Option<Got> {
        match &mut self.conn {
            Conn::Sse(sse) => {
                let f = sse.next().await?;
                let name = f.event.clone().expect("every frame after retry names its event");
                let body = f.json();
                let cursor =
                    f.id.clone()
                        .unwrap_or_else(|| panic!("a frame without id: {f:?}"));
                let kind = match name.as_str() {
                    "tidings.ready" => Kind::Ready,
                    "tidings.reset" => Kind::Reset,
                    "tidings.lagged" => Kind::Lagged,
                    "tidings.expired" => Kind::Expired,
                    other if other.starts_with("tidings.") => panic!("unexpected frame {f:?}"),
                    _ => {
                        assert_eq!(body["event"], name.as_str(), "{f:?}");
                        return Some(Got {
                            kind: Kind::Event,
                            cursor,
                            body,
                        });
                    }
                };
                assert_eq!(
                    body["cursor"],
                    cursor.as_str(),
                    "data holds the id: cursor: {f:?}"
                );
                Some(Got { kind, cursor, body })
            }
            Conn::Ws(ws) => {
                let mut frame = ws.next().await?;
                let map = frame.as_object_mut().unwrap();
                let kind = match map.remove("type").unwrap().as_str().unwrap() {
                    "event" => Kind::Event,
                    "ready" => {
                        assert_eq!(map.remove("ref"), Some(json!("s")), "ready answers the subscribe");
                        Kind::Ready
                    }
                    "reset" => Kind::Reset,
                    "lagged" => Kind::Lagged,
                    "expired" => Kind::Expired,
                    _ => panic!("unexpected frame {frame}"),
                };
                let cursor = if kind == Kind::Event {
                    map.remove("cursor")
                } else {
                    map.get("cursor").cloned()
                };
                let cursor = cursor
                    .and_then(|c| c.as_str().map(str::to_string))
                    .unwrap_or_else(|| panic!("a frame without cursor: {frame}"));
                Some(Got {
                    kind,
                    cursor,
                    body: frame,
                })
            }
        }
    }

    /// Reads frames until one of `kind`, returning every frame read (including it).
    async fn until(&mut self, kind: Kind) -> Vec<Got> {
        let mut frames = Vec::new();
        loop {
            let f = self
                .next()
                .await
                .unwrap_or_else(|| panic!("ended before {kind:?}; got {frames:?}"));
            let done = f.kind == kind;
            frames.push(f);
            if done {
                return frames;
            }
        }
    }

    /// The next `n` frames, every one an event.
    async fn events(&mut self, n: usize) -> Vec<Got> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let f = self.next().await.expect("an event, not the end");
            assert_eq!(f.kind, Kind::Event, "{f:?} after {got:?}");
            got.push(f);
        }
        got
    }

    /// Asserts the connection ends now; returns the WebSocket close code (`None` on SSE).
    async fn end(&mut self) -> Option<u16> {
        if let Some(f) = self.next().await {
            panic!("expected the end, got {f:?}");
        }
        match &self.conn {
            Conn::Sse(_) => None,
            Conn::Ws(ws) => Some(ws.closed.as_ref().expect("a close frame").0),
        }
    }
}

/// Checks that each event frame's cursor holds the event's own id for its channel, and the
/// positions of the previous frame in the other channels: one cursor for the connection.
fn assert_cursors_follow(prev: &str, frames: &[Got]) {
    let mut expected = Cursor::parse(prev).unwrap();
    for f in frames {
        let cursor = Cursor::parse(&f.cursor).unwrap();
        if f.kind == Kind::Event {
            let channel = Channel::new(f.channel()).unwrap();
            let pos = cursor
                .get(&channel)
                .unwrap_or_else(|| panic!("{f:?} names its channel"));
            assert_eq!(pos.id, f.id(), "{f:?}");
            expected.set(&channel, pos);
            assert_eq!(cursor, expected, "only the event's own channel moved: {f:?}");
        }
        expected = cursor;
    }
}

async fn emit(s: &TestServer, channel: &str, text: &str) -> Ev {
    let id = s.emit_ok(channel, "chat.message", msg(text)).await;
    (channel.to_string(), id.parse().unwrap(), text.to_string())
}

async fn history_ids(s: &TestServer, channel: &str) -> Vec<StreamId> {
    let url = reqwest::Url::parse_with_params(&s.url("/history"), [("channel", channel), ("limit", "1000")])
        .unwrap();
    let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// `events` in the order a replay sends them: by id, channels in subscription order on a tie.
fn replay_order(mut events: Vec<Ev>, channels: &[&str]) -> Vec<Ev> {
    let rank = |c: &str| channels.iter().position(|x| *x == c).unwrap();
    events.sort_by_key(|(c, id, _)| (*id, rank(c)));
    events
}

fn per_channel(events: &[Ev]) -> BTreeMap<String, Vec<Ev>> {
    let mut out: BTreeMap<String, Vec<Ev>> = BTreeMap::new();
    for e in events {
        out.entry(e.0.clone()).or_default().push(e.clone());
    }
    out
}

fn jwt_config(c: Config) -> Config {
    c.authorizer(JwtAuthorizer::hs256(JWT_SECRET))
}

fn token(expires_in: u64) -> String {
    hs256(json!({ "sub": "ada", "exp": unix_now() + expires_in, "subscribe": ["room:*"] }))
}

async fn memory_server(retention: Retention, tweak: impl FnOnce(Config) -> Config) -> TestServer {
    let store = Arc::new(MemoryStore::new(retention.clone()));
    TestServer::start(store, |c| tweak(c.retention(retention))).await
}

// (a) ------------------------------------------------------------------------------------------

async fn ready_then_live_events_carry_the_connection_cursor(t: Transport) {
    let s = memory_server(Retention::default(), |c| c).await;
    let (_, a0, _) = emit(&s, "room:a", "before").await;
    let mut c = Client::open(t, &s.url(""), &["room:a", "room:b"], None, None).await;
    let ready = c.next().await.unwrap();
    assert_eq!(ready.kind, Kind::Ready, "{ready:?}");
    assert_eq!(by_id(&ready.cursor), format!("room:a={a0},room:b=0-0"));
    assert_eq!(
        ready.body,
        json!({ "cursor": ready.cursor, "channels": ["room:a", "room:b"], "heartbeat_ms": 15000 })
    );
    let (room_a, room_b) = (Channel::new("room:a").unwrap(), Channel::new("room:b").unwrap());
    let epoch_a = Cursor::parse(&ready.cursor).unwrap().get(&room_a).unwrap().epoch;
    assert!(epoch_a.is_some(), "{ready:?}");

    let sent = [
        emit(&s, "room:a", "one").await,
        emit(&s, "room:b", "two").await,
        emit(&s, "room:a", "three").await,
    ];
    let got = c.events(3).await;
    let (a1, b1, a2) = (sent[0].1, sent[1].1, sent[2].1);
    let cursors: Vec<String> = got.iter().map(|f| by_id(&f.cursor)).collect();
    assert_eq!(
        cursors,
        [
            format!("room:a={a1},room:b=0-0"),
            format!("room:a={a1},room:b={b1}"),
            format!("room:a={a2},room:b={b1}"),
        ]
    );
    for (f, (channel, id, text)) in got.iter().zip(&sent) {
        assert_eq!(
            f.body,
            json!({ "id": id.to_string(), "channel": channel, "event": "chat.message", "data": msg(text) })
        );
        assert_eq!(
            Cursor::parse(&f.cursor).unwrap().get(&room_a).unwrap().epoch,
            epoch_a
        );
    }
    assert_cursors_follow(&ready.cursor, &got);
    // room:b's stream was created after the connection opened: its epoch is in the cursor too.
    let epoch_b = Cursor::parse(&got[1].cursor).unwrap().get(&room_b).unwrap().epoch;
    assert!(epoch_b.is_some() && epoch_b != epoch_a, "{got:?}");
    assert_eq!(
        Cursor::parse(&got[2].cursor).unwrap().get(&room_b).unwrap().epoch,
        epoch_b
    );
}

// (b) ------------------------------------------------------------------------------------------

const ROOMS: [&str; 3] = ["room:a", "room:b", "room:c"];

/// A small deterministic generator (xorshift), so failures replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

async fn resume_of_three_interleaved_channels_on_memory(t: Transport) {
    resume_of_three_interleaved_channels(t, Backend::Memory).await;
}

async fn resume_of_three_interleaved_channels_on_redis(t: Transport) {
    resume_of_three_interleaved_channels(t, Backend::redis()).await;
}

async fn resume_of_three_interleaved_channels(t: Transport, b: Backend) {
    let s = TestServer::start(b.store(Retention::default(), "p:").await, |c| c).await;
    let mut c = Client::open(t, &s.url(""), &ROOMS, None, None).await;
    let ready = c.next().await.unwrap();
    assert_eq!(ready.kind, Kind::Ready);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut sent = Vec::new();
    for i in 0..30 {
        // Round-robin, with a random channel every third emit.
        let room = if i % 3 == 2 {
            ROOMS[rng.below(3)]
        } else {
            ROOMS[i % 3]
        };
        sent.push(emit(&s, room, &format!("{room}#{i}")).await);
    }
    let seen = c.events(17).await;
    assert_cursors_follow(&ready.cursor, &seen);
    let seen_evs: Vec<Ev> = seen.iter().map(Got::ev).collect();
    // Live, each channel's events come in order, from its first.
    for (room, evs) in per_channel(&seen_evs) {
        let all = &per_channel(&sent)[&room];
        assert_eq!(&all[..evs.len()], &evs[..], "{room}");
    }
    let last = seen.last().unwrap().cursor.clone();
    drop(c);
    for i in 30..36 {
        let room = ROOMS[rng.below(3)];
        sent.push(emit(&s, room, &format!("{room}#{i}")).await);
    }

    let mut c = Client::open(t, &s.url(""), &ROOMS, Some(&last), None).await;
    let frames = c.until(Kind::Ready).await;
    let (ready, replayed) = frames.split_last().unwrap();
    let replayed_evs: Vec<Ev> = replayed.iter().map(Got::ev).collect();
    let rest: Vec<Ev> = sent.iter().filter(|e| !seen_evs.contains(e)).cloned().collect();
    assert_eq!(rest.len(), 36 - 17);
    assert_eq!(
        replayed_evs,
        replay_order(rest, &ROOMS),
        "exactly the rest, in id order, once"
    );
    let all: HashSet<&Ev> = seen_evs.iter().chain(&replayed_evs).collect();
    assert_eq!(all.len(), 36, "nothing seen twice, nothing lost");
    assert_cursors_follow(&last, replayed);
    assert_eq!(
        ready.cursor,
        replayed.last().unwrap().cursor,
        "ready holds the cursor after the replay"
    );
    let newest: Vec<String> = ROOMS
        .iter()
        .map(|r| format!("{r}={}", sent.iter().rev().find(|e| e.0 == *r).unwrap().1))
        .collect();
    assert_eq!(by_id(&ready.cursor), newest.join(","));

    // Then live, and nothing else in between.
    let live = [
        emit(&s, "room:c", "live 1").await,
        emit(&s, "room:a", "live 2").await,
        emit(&s, "room:b", "live 3").await,
    ];
    let got: Vec<Ev> = c.events(3).await.iter().map(Got::ev).collect();
    assert_eq!(per_channel(&got), per_channel(&live));
}

// (c) ------------------------------------------------------------------------------------------

async fn trimmed_history_sends_reset_then_what_is_held(t: Transport) {
    let s = memory_server(Retention::default().max_len(10), |c| c).await;
    let rooms = ["room:a", "room:b"];
    let mut c = Client::open(t, &s.url(""), &rooms, None, None).await;
    c.until(Kind::Ready).await;
    let (_, a0, _) = emit(&s, "room:a", "old").await;
    let (_, b0, _) = emit(&s, "room:b", "b old").await;
    let cursor = c.events(2).await[1].cursor.clone();
    drop(c);
    let mut sent = Vec::new();
    for i in 0..25 {
        sent.push(emit(&s, "room:a", &format!("a{i}")).await);
    }
    for i in 0..2 {
        sent.push(emit(&s, "room:b", &format!("b{i}")).await);
    }
    let held = history_ids(&s, "room:a").await;
    assert!(
        held.len() < 25 && held[0] > a0,
        "room:a was trimmed past the cursor: {held:?}"
    );

    let mut c = Client::open(t, &s.url(""), &rooms, Some(&cursor), None).await;
    let frames = c.until(Kind::Ready).await;
    let reset = &frames[0];
    assert_eq!(reset.kind, Kind::Reset, "reset comes first: {frames:?}");
    assert_eq!(reset.body["channel"], "room:a");
    assert_eq!(reset.body["reason"], "trimmed");
    assert_eq!(
        reset.body["oldest"],
        held[0].to_string(),
        "oldest is the first id held"
    );
    let reset_cursor = Cursor::parse(&reset.cursor).unwrap();
    let a_from = reset_cursor.get(&Channel::new("room:a").unwrap()).unwrap().id;
    assert!(
        a0 < a_from && a_from < held[0],
        "resumes after what is gone: {reset:?}"
    );
    assert_eq!(
        reset_cursor.get(&Channel::new("room:b").unwrap()).unwrap().id,
        b0,
        "the other channel keeps the client's position"
    );
    let (ready, replayed) = frames[1..].split_last().unwrap();
    let want: Vec<Ev> = sent
        .iter()
        .filter(|e| e.0 == "room:b" || held.contains(&e.1))
        .cloned()
        .collect();
    let replayed_evs: Vec<Ev> = replayed.iter().map(Got::ev).collect();
    assert_eq!(replayed_evs, replay_order(want, &rooms), "exactly what is held");
    assert_cursors_follow(&reset.cursor, replayed);
    assert_eq!(ready.cursor, replayed.last().unwrap().cursor);
    drop(c);

    // The reset frame's cursor resumes without another reset, to the same events.
    let mut c = Client::open(t, &s.url(""), &rooms, Some(&reset.cursor), None).await;
    let again = c.until(Kind::Ready).await;
    assert_eq!(again[..again.len() - 1], *replayed);
}

// (d) ------------------------------------------------------------------------------------------

async fn a_lagging_client_is_dropped_and_resumes_exactly(t: Transport) {
    let s = memory_server(Retention::default(), |mut c| {
        c.limits.subscriber_queue = 1;
        c
    })
    .await;
    let mut c = Client::open(t, &s.url(""), &["room:1"], None, None).await;
    let ready = c.next().await.unwrap();
    assert_eq!((ready.kind, ready.cursor.as_str()), (Kind::Ready, "room:1=0-0"));
    const BURST: usize = 50;
    let room = s.rt.channel("room:1");
    for i in 0..BURST {
        // Without yielding: the hub reads the whole burst in one batch, whatever the sockets do.
        room.emit(ChatMessage {
            text: format!("burst {i}").parse().unwrap(),
            user: "ada".parse().unwrap(),
            reply_to: None,
            mentions: vec![],
        })
        .now_or_never()
        .expect("the memory store appends without waiting")
        .unwrap();
    }
    let frames = c.until(Kind::Lagged).await;
    let (lagged, delivered) = frames.split_last().unwrap();
    assert!(
        delivered.len() <= 1,
        "at most the queue's worth first: {frames:?}"
    );
    for (i, f) in delivered.iter().enumerate() {
        assert_eq!(f.text(), format!("burst {i}"));
    }
    let last = delivered.last().unwrap_or(&ready).cursor.clone();
    assert_eq!(lagged.cursor, last, "lagged holds the cursor of the last frame");
    assert!(
        lagged.body["reason"].as_str().unwrap().contains("fell behind"),
        "{lagged:?}"
    );
    let code = c.end().await;
    assert_eq!(code, (t == Transport::Ws).then_some(4002));

    let mut c = Client::open(t, &s.url(""), &["room:1"], Some(&lagged.cursor), None).await;
    let frames = c.until(Kind::Ready).await;
    let texts: Vec<&str> = frames[..frames.len() - 1].iter().map(Got::text).collect();
    let want: Vec<String> = (delivered.len()..BURST).map(|i| format!("burst {i}")).collect();
    assert_eq!(texts, want, "the rest of the burst, exactly once, no reset");
}

// (e) ------------------------------------------------------------------------------------------

async fn an_expiring_token_ends_with_expired_whose_cursor_resumes(t: Transport) {
    let s = memory_server(Retention::default(), jwt_config).await;
    let mut c = Client::open(t, &s.url(""), &["room:1"], None, Some(&token(2))).await;
    c.until(Kind::Ready).await;
    emit(&s, "room:1", "one").await;
    emit(&s, "room:1", "two").await;
    let got = c.events(2).await;
    let expired = tokio::time::timeout(Duration::from_secs(4), c.next())
        .await
        .expect("expired within the token's 2 s")
        .expect("an expired frame");
    assert_eq!(expired.kind, Kind::Expired, "{expired:?}");
    assert_eq!(expired.cursor, got[1].cursor);
    assert_eq!(
        expired.body,
        json!({ "reason": "token expired", "cursor": expired.cursor })
    );
    assert_eq!(c.end().await, (t == Transport::Ws).then_some(4004));
    let more = [
        emit(&s, "room:1", "three").await,
        emit(&s, "room:1", "four").await,
    ];

    let mut c = Client::open(
        t,
        &s.url(""),
        &["room:1"],
        Some(&expired.cursor),
        Some(&token(600)),
    )
    .await;
    let frames = c.until(Kind::Ready).await;
    let replayed: Vec<Ev> = frames[..frames.len() - 1].iter().map(Got::ev).collect();
    assert_eq!(replayed, more, "exactly what came after the expiry");
}

// SSE and WebSocket side by side -----------------------------------------------------------------

/// The same events, seen live, replayed and reset, give identical frames and cursor strings on
/// both transports.
#[tokio::test(flavor = "current_thread")]
async fn sse_and_websocket_write_the_same_frames_and_cursors() {
    let s = memory_server(Retention::default().max_len(10), |c| c).await;
    let base = s.url("");
    let open = |cursor: Option<String>| {
        let base = base.clone();
        async move {
            let sse = Client::open(Transport::Sse, &base, &ROOMS, cursor.as_deref(), None).await;
            let ws = Client::open(Transport::Ws, &base, &ROOMS, cursor.as_deref(), None).await;
            (sse, ws)
        }
    };
    emit(&s, "room:b", "before").await;
    let (mut sse, mut ws) = open(None).await;
    let (r1, r2) = (sse.next().await.unwrap(), ws.next().await.unwrap());
    assert_eq!(r1, r2);
    assert_eq!(r1.kind, Kind::Ready);
    let first = r1.cursor.clone();
    for (i, room) in ["room:a", "room:c", "room:a", "room:b", "room:c", "room:c"]
        .iter()
        .enumerate()
    {
        emit(&s, room, &format!("live {i}")).await;
    }
    let (live_sse, live_ws) = (sse.events(6).await, ws.events(6).await);
    assert_eq!(live_sse, live_ws, "live frames and cursors alike");
    drop((sse, ws));

    // Replay from the middle.
    let (mut sse, mut ws) = open(Some(live_sse[2].cursor.clone())).await;
    let (a, b) = (sse.until(Kind::Ready).await, ws.until(Kind::Ready).await);
    assert_eq!(a, b, "replayed frames alike");
    assert_eq!(a.len(), 4);
    drop((sse, ws));

    // Trimmed past the first cursor: reset, what is held, ready.
    for i in 0..15 {
        emit(&s, "room:a", &format!("more {i}")).await;
    }
    let (mut sse, mut ws) = open(Some(first)).await;
    let (a, b) = (sse.until(Kind::Ready).await, ws.until(Kind::Ready).await);
    assert_eq!(a, b, "reset and replay alike");
    assert_eq!(a[0].kind, Kind::Reset, "{a:?}");
}
