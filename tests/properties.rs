//! Property tests for the values that travel on the wire (cursors, stream ids, channel names) and
//! for the SSE framing: no payload, whatever its characters, can add a field or a frame to the
//! stream. Case counts are modest so the file runs in a few seconds; raise them locally with
//! `PROPTEST_CASES=10000 cargo test --test properties`.
//!
//! The fuzz targets in `fuzz/` check the same parsing properties on raw bytes (see SECURITY.md, "Fuzzing and property tests").

mod support;

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};
use support::TestServer;
use tidings::{Channel, Cursor, MemoryStore, Position, StreamId, DEFAULT_MAX_CHANNEL_LEN, MAX_CURSOR_LEN};

/// The documented rule: 1 to 128 bytes from `A-Z a-z 0-9 _ - : .`.
fn documented(name: &str) -> bool {
    (1..=DEFAULT_MAX_CHANNEL_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'))
}

fn channel_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_:.-]{1,128}"
}

fn stream_id() -> impl Strategy<Value = StreamId> {
    prop_oneof![
        (any::<u64>(), any::<u64>()),
        (0u64..5, 0u64..5),
        (Just(u64::MAX), any::<u64>()),
        (any::<u64>(), Just(u64::MAX)),
    ]
    .prop_map(|(ms, seq)| StreamId::new(ms, seq))
}

/// Names near the edge of the rule: allowed characters at and around the length limit, one
/// forbidden character spliced into a valid name, and anything at all.
fn candidate_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_:.-]{0,140}",
        "[A-Za-z0-9_:.-]{126,130}",
        (
            "[A-Za-z0-9_:.-]{0,130}",
            any::<prop::sample::Index>(),
            prop_oneof![
                Just(','),
                Just('='),
                Just(' '),
                Just('\n'),
                Just('\r'),
                Just('\0'),
                Just('{'),
                Just('/'),
                Just('%'),
                Just('é'),
                Just('\u{2028}'),
                Just('\u{ff0e}'),
                any::<char>(),
            ],
        )
            .prop_map(|(s, at, c)| {
                let mut s = s;
                let at = if s.is_empty() { 0 } else { at.index(s.len() + 1) };
                s.insert(at, c);
                s
            }),
        any::<String>(),
    ]
}

/// `default` cases, or `PROPTEST_CASES` when set.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn cursor_round_trips(
        positions in prop::collection::vec((channel_name(), stream_id(), prop::option::of(any::<u32>())), 0..40)
    ) {
        let mut cursor = Cursor::default();
        let mut expected: Vec<(Channel, Position)> = Vec::new();
        for (name, id, epoch) in &positions {
            let channel = Channel::new(name).unwrap();
            let epoch = epoch.map(|e| format!("{e:08x}").parse().unwrap());
            let id = &Position::new(*id, epoch);
            cursor.set(&channel, *id);
            match expected.iter_mut().find(|(c, _)| *c == channel) {
                Some((_, pos)) => *pos = *id,
                None => expected.push((channel, *id)),
            }
        }
        // 40 channels of at most 128 bytes with 20-digit ids stay far below MAX_CURSOR_LEN.
        let text = cursor.to_string();
        prop_assert!(text.len() <= MAX_CURSOR_LEN);
        prop_assert!(!text.contains(['\r', '\n', '\0']));
        prop_assert!(text.bytes().all(|b| b.is_ascii_graphic()), "not printable ASCII: {text:?}");
        let parsed = Cursor::parse(&text).unwrap();
        prop_assert_eq!(&parsed, &cursor);
        let got: Vec<(Channel, Position)> = parsed.iter().map(|(c, id)| (c.clone(), id)).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn parsed_cursors_reprint_and_reparse(text in prop_oneof![
        "([a-z:]{1,3}=[0-9]{1,3}-[0-9]{1,3})(,[a-z:]{1,3}=[0-9]{1,3}-[0-9]{1,3}){0,4}",
        "[a-z0-9=,:. \\-\n\r\0]{0,40}",
        any::<String>(),
    ]) {
        if let Ok(cursor) = Cursor::parse(&text) {
            let printed = cursor.to_string();
            prop_assert!(!printed.contains(['\r', '\n', '\0']));
            prop_assert_eq!(Cursor::parse(&printed).unwrap(), cursor);
        }
    }

    #[test]
    fn stream_id_display_parse_round_trips(id in stream_id()) {
        let text = id.to_string();
        prop_assert_eq!(text.parse::<StreamId>().unwrap(), id);
        // Leading zeros up to the 20-digit field width read as the same id.
        let padded = format!("{:0>20}-{:0>20}", id.ms, id.seq);
        prop_assert_eq!(padded.parse::<StreamId>().unwrap(), id);
    }

    #[test]
    fn stream_id_orders_by_ms_then_seq(a in stream_id(), b in stream_id()) {
        prop_assert_eq!(a.cmp(&b), (a.ms, a.seq).cmp(&(b.ms, b.seq)));
        let (pa, pb): (StreamId, StreamId) = (a.to_string().parse().unwrap(), b.to_string().parse().unwrap());
        prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
        if a != StreamId::new(u64::MAX, u64::MAX) {
            prop_assert!(a.successor() > a);
        }
    }

    #[test]
    fn stream_id_parse_never_panics_and_is_strict(text in prop_oneof![
        "[0-9]{0,22}-[0-9]{0,22}",
        "[0-9+ \\-a]{0,12}",
        any::<String>(),
    ]) {
        if let Ok(id) = text.parse::<StreamId>() {
            let (ms, seq) = text.split_once('-').unwrap();
            prop_assert!(ms.bytes().all(|b| b.is_ascii_digit()) && seq.bytes().all(|b| b.is_ascii_digit()));
            prop_assert_eq!(id.ms, ms.parse::<u64>().unwrap());
            prop_assert_eq!(id.seq, seq.parse::<u64>().unwrap());
        }
    }

    #[test]
    fn channel_accepts_exactly_the_documented_set(name in candidate_name()) {
        match Channel::new(&name) {
            Ok(channel) => {
                prop_assert!(documented(&name), "accepted {name:?}");
                prop_assert_eq!(channel.as_str(), name.as_str());
            }
            Err(e) => prop_assert!(!documented(&name), "refused {name:?}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SSE framing: payloads cannot inject fields or frames.
// ---------------------------------------------------------------------------------------------

/// Text biased towards what could break a line-based protocol.
fn nasty_text(max_chars: usize) -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("\n".to_string()),
        Just("\r".to_string()),
        Just("\r\n".to_string()),
        Just("\n\n".to_string()),
        Just("\u{2028}".to_string()),
        Just("\u{2029}".to_string()),
        Just("\u{85}".to_string()),
        Just("\u{feff}".to_string()),
        Just("\0".to_string()),
        Just("data: ".to_string()),
        Just("event: tidings.reset".to_string()),
        Just("id: x=0-0".to_string()),
        Just("retry: 1".to_string()),
        Just(": comment".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        "[\\x00-\\x1f\\x7f]{1,3}",
        "\\PC{1,6}",
        ".{1,6}",
    ];
    prop::collection::vec(atom, 1..10)
        .prop_map(move |parts| parts.concat().chars().take(max_chars).collect::<String>())
}

/// An (event, payload) pair the demo schema accepts, with nasty strings in every string slot.
fn payload() -> impl Strategy<Value = (&'static str, Value)> {
    prop_oneof![
        nasty_text(280).prop_map(|s| ("notification.alert", Value::String(s))),
        (
            nasty_text(300),
            nasty_text(64),
            prop::option::of(nasty_text(40)),
            prop::collection::vec(nasty_text(64), 0..3),
        )
            .prop_map(|(text, user, reply_to, mentions)| {
                let mut v = json!({ "text": text, "user": user });
                if let Some(r) = reply_to {
                    v["reply_to"] = Value::String(r);
                }
                if !mentions.is_empty() {
                    v["mentions"] = json!(mentions);
                }
                ("chat.message", v)
            }),
    ]
}

type Body = std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// The raw bytes of one SSE response, cut into blocks at blank lines.
struct RawStream {
    body: Body,
    pending: Vec<u8>,
}

impl RawStream {
    async fn open(url: &str, last_event_id: Option<&str>) -> RawStream {
        let mut req = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        RawStream {
            body: Box::pin(r.bytes_stream()),
            pending: Vec::new(),
        }
    }

    /// The next block that is not only comments or `retry:`, without its terminating blank line.
    async fn next_block(&mut self) -> String {
        loop {
            while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                let block = String::from_utf8(block[..end].to_vec()).expect("SSE is UTF-8");
                if block
                    .lines()
                    .all(|l| l.starts_with(':') || l.starts_with("retry: "))
                {
                    continue;
                }
                return block;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("timed out waiting for an SSE frame")
                .expect("stream ended")
                .expect("stream failed");
            self.pending.extend_from_slice(&chunk);
        }
    }
}

/// Checks one event block against the emitted entry: exactly the lines `id:`, `event:`, `data:`,
/// once each, in that order, with no CR anywhere (a CR ends a line for an SSE parser too), and the
/// data reads back as the envelope of exactly what was emitted.
fn check_block(
    block: &str,
    channel: &Channel,
    id: &str,
    event: &str,
    data: &Value,
) -> Result<(), TestCaseError> {
    prop_assert!(!block.contains('\r'), "CR in frame: {block:?}");
    prop_assert!(!block.contains('\0'), "NUL in frame: {block:?}");
    let lines: Vec<&str> = block.split('\n').collect();
    prop_assert_eq!(lines.len(), 3, "frame is not three lines: {:?}", block);
    let fields: Vec<&str> = lines.iter().map(|l| l.split(':').next().unwrap()).collect();
    prop_assert_eq!(fields, vec!["id", "event", "data"], "frame: {:?}", block);
    let cursor = Cursor::parse(lines[0].strip_prefix("id: ").unwrap()).unwrap();
    prop_assert_eq!(
        cursor.get(channel).map(|p| p.id),
        Some(id.parse::<StreamId>().unwrap())
    );
    prop_assert_eq!(lines[1].strip_prefix("event: ").unwrap(), event);
    let envelope: Value = serde_json::from_str(lines[2].strip_prefix("data: ").unwrap())
        .map_err(|e| TestCaseError::fail(format!("data is not JSON ({e}): {block:?}")))?;
    prop_assert_eq!(
        envelope,
        json!({ "id": id, "channel": channel.as_str(), "event": event, "data": data })
    );
    Ok(())
}

#[test]
fn no_payload_can_inject_an_sse_field_or_frame() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let channel = Channel::new("props:sse").unwrap();
    let (server, stream) = rt.block_on(async {
        let server = TestServer::start(Arc::new(MemoryStore::default()), |c| c).await;
        let mut stream = RawStream::open(&server.url("/realtime?channel=props:sse"), None).await;
        let ready = stream.next_block().await;
        assert!(ready.contains("\nevent: tidings.ready\n"), "{ready:?}");
        (server, stream)
    });
    // The runner's closure is Fn: the stream sits behind an async mutex held across awaits.
    let stream = tokio::sync::Mutex::new(stream);
    let emitted: RefCell<Vec<(String, &'static str, Value)>> = RefCell::new(Vec::new());

    let mut runner = TestRunner::new(RunnerConfig {
        cases: cases(96),
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let result = runner.run(&payload(), |(event, data)| {
        rt.block_on(async {
            let (status, body) = server.emit(channel.as_str(), event, data.clone()).await;
            prop_assert_eq!(status, 200, "emit refused: {}", body);
            let id = body["id"].as_str().unwrap().to_string();
            emitted.borrow_mut().push((id.clone(), event, data.clone()));
            // Live path: the frame as the hub pushes it.
            let block = stream.lock().await.next_block().await;
            check_block(&block, &channel, &id, event, &data)
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }

    // Replay path: the same entries read back from the store after a reconnect from 0-0.
    rt.block_on(async {
        let mut replay =
            RawStream::open(&server.url("/realtime?channel=props:sse"), Some("props:sse=0-0")).await;
        let emitted = emitted.borrow().clone();
        for (id, event, data) in emitted.iter() {
            let block = replay.next_block().await;
            check_block(&block, &channel, id, event, data).unwrap();
        }
        let ready = replay.next_block().await;
        assert!(ready.contains("\nevent: tidings.ready\n"), "{ready:?}");
    });
    drop(server);
}
