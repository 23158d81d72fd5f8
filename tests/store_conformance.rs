//! The store conformance suite: one set of behaviours, asserted identically on every [`Store`].
//!
//! Each `async fn` in the suite takes a [`Backend`] and is generated twice by `conformance!`, as
//! `memory::<case>` and `redis::<case>` (one real redis-server per Redis test, so tests never
//! share keys). Behaviours only Redis has (entries written by other tools, the key layout, the
//! server going away) are in `redis_only`.
//!
//! Capping bound: Redis trims with `XADD … MAXLEN ~ n`, which only removes whole radix-tree nodes
//! (at most `stream-node-max-entries` = 100 entries each), so a capped stream holds between
//! `max_len` and `max_len + 100` entries (`MAXLEN_SLACK`). Tests that need history trimmed past a
//! cursor append `max_len + 300` entries, which trims on both stores.
//!
//! Time: TTL runs under `tokio::time::pause()` on the memory store (it keeps deadlines as
//! `tokio::time::Instant`); Redis expires keys on its own clock, so there the TTL is 1 s of real
//! time. `tail` is timed in real time on both, with generous upper bounds.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{Backend, RedisServer};
use tidings::store::{Replay, TailBatch, Trimmed};
use tidings::{
    Channel, Entry, Range, RedisOptions, RedisStore, Retention, Store, StoreError, StreamId, TailMode,
};

/// How many entries above `max_len` a capped Redis stream may hold (one whole stream node).
const MAXLEN_SLACK: usize = 100;
/// The largest id; a client may send it as a cursor.
const MAX_ID: StreamId = StreamId::new(u64::MAX, u64::MAX);
/// "Promptly": well below every `wait` used when a tail is expected to return early.
const PROMPT: Duration = Duration::from_secs(3);
/// A tail wait long enough that returning before [`PROMPT`] proves it returned early.
const LONG_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn ch(name: &str) -> Channel {
    Channel::new(name).unwrap()
}

fn is_memory(backend: &Backend) -> bool {
    matches!(backend, Backend::Memory)
}

async fn open(backend: &Backend, retention: Retention) -> Arc<dyn Store> {
    backend.store(retention, "t:").await
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn data_of(i: usize) -> String {
    format!(r#"{{"n":{i}}}"#)
}

fn entry(id: StreamId, event: &str, data: &str) -> Entry {
    Entry {
        id,
        event: Arc::from(event),
        data: Arc::from(data),
    }
}

/// Appends `n` `chat.message` entries with data `{"n":i}` and returns them as the store should.
async fn append_n(store: &dyn Store, channel: &Channel, n: usize) -> Vec<Entry> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let data = data_of(i);
        let id = store.append(channel, "chat.message", &data).await.unwrap();
        out.push(entry(id, "chat.message", &data));
    }
    out
}

/// Everything the channel holds, oldest first.
async fn held(store: &dyn Store, channel: &Channel) -> Vec<Entry> {
    store.history(channel, Range::Latest, 1_000_000).await.unwrap()
}

fn ids(entries: &[Entry]) -> Vec<StreamId> {
    entries.iter().map(|e| e.id).collect()
}

fn trim_of(replay: &Replay) -> &Trimmed {
    replay
        .trimmed
        .as_ref()
        .unwrap_or_else(|| panic!("expected a trim signal, got {replay:?}"))
}

fn by_channel(mut batches: Vec<TailBatch>) -> Vec<TailBatch> {
    batches.sort_by(|a, b| a.channel.cmp(&b.channel));
    batches
}

/// Lets `d` pass: virtual time on the (paused) memory store, real time on Redis.
async fn pass(backend: &Backend, d: Duration) {
    if is_memory(backend) {
        tokio::time::advance(d).await;
    } else {
        tokio::time::sleep(d).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The suite, generated per backend
// ---------------------------------------------------------------------------------------------

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Memory).await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::redis()).await;
                }
            )*
        }

        mod redis_xread {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::redis_xread()).await;
                }
            )*
        }
    };
}

conformance!(
    kind_and_ping,
    ids_increase_in_ms_seq_format,
    last_id_is_the_newest_and_zero_when_unknown,
    channels_are_independent,
    concurrent_appends_get_distinct_ordered_ids,
    history_latest_is_newest_n_oldest_first,
    history_after_and_before_are_exclusive,
    history_pages_through_250_entries_both_ways,
    history_of_unknown_channel_is_empty,
    capping_keeps_at_least_max_len_newest,
    capping_to_one,
    replay_after_cursor_is_exact_when_untrimmed,
    replay_pages_with_limit,
    replay_reports_trim_past_cursor,
    replay_cursor_from_zero,
    replay_unknown_channel,
    replay_cursor_ahead_of_stream,
    data_and_event_names_round_trip,
    tail_returns_news_per_channel,
    tail_respects_count,
    tail_blocks_up_to_wait,
    tail_returns_promptly_on_append_to_watched_channel,
    tail_returns_promptly_on_wake_from_other_task,
    wake_before_tail_is_not_lost,
    tail_reports_gap_when_trimmed_past_position,
    tail_reports_no_gap_when_contiguous,
    ttl_drops_idle_channel_and_append_refreshes,
);

async fn kind_and_ping(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let expected = if backend.redis_server().is_some() {
        "redis"
    } else {
        "memory"
    };
    assert_eq!(store.kind(), expected);
    store.ping().await.unwrap();
}

async fn ids_increase_in_ms_seq_format(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let before = now_ms();
    let mut appended = Vec::new();
    for i in 0..200 {
        appended.push(store.append(&room, "chat.message", &data_of(i)).await.unwrap());
    }
    let after = now_ms();
    for w in appended.windows(2) {
        assert!(w[0] < w[1], "ids not strictly increasing: {} then {}", w[0], w[1]);
    }
    for id in &appended {
        let text = id.to_string();
        let (ms, seq) = text
            .split_once('-')
            .unwrap_or_else(|| panic!("{text} is not ms-seq"));
        assert!(!ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()), "{text}");
        assert!(
            !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()),
            "{text}"
        );
        assert_eq!(text.parse::<StreamId>().unwrap(), *id);
        // Both stores put wall-clock milliseconds first (Redis ids are time-based).
        assert!(
            id.ms + 1000 >= before && id.ms <= after + 1000,
            "{text} is not near the wall clock ({before}..{after})"
        );
    }
    assert_eq!(ids(&held(&*store, &room).await), appended);
}

async fn last_id_is_the_newest_and_zero_when_unknown(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    assert_eq!(store.last_id(&room).await.unwrap(), StreamId::ZERO);
    for i in 0..20 {
        let id = store.append(&room, "chat.message", &data_of(i)).await.unwrap();
        assert_eq!(store.last_id(&room).await.unwrap(), id);
    }
    assert_eq!(store.last_id(&ch("never.written")).await.unwrap(), StreamId::ZERO);
}

async fn channels_are_independent(backend: Backend) {
    let store = open(&backend, Retention::default().max_len(5)).await;
    let (a, b) = (ch("room:a"), ch("room:b"));
    let in_a = append_n(&*store, &a, 3).await;
    let mut in_b = Vec::new();
    for i in 0..400 {
        let data = format!(r#"{{"b":{i}}}"#);
        let id = store.append(&b, "user.typing", &data).await.unwrap();
        in_b.push(entry(id, "user.typing", &data));
    }
    // b was trimmed hard; a is untouched by b's appends and trimming.
    assert_eq!(store.last_id(&a).await.unwrap(), in_a[2].id);
    assert_eq!(held(&*store, &a).await, in_a);
    assert_eq!(store.replay(&a, StreamId::ZERO, 100).await.unwrap().trimmed, None);
    let b_held = held(&*store, &b).await;
    assert_eq!(b_held.last(), in_b.last());
    assert!(b_held.iter().all(|e| &*e.event == "user.typing"));
    assert_eq!(store.last_id(&b).await.unwrap(), in_b[399].id);
}

async fn concurrent_appends_get_distinct_ordered_ids(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            let room = room.clone();
            tokio::spawn(async move {
                let data = data_of(i);
                let id = store.append(&room, "chat.message", &data).await.unwrap();
                (id, data)
            })
        })
        .collect();
    let mut appended = Vec::new();
    for t in tasks {
        appended.push(t.await.unwrap());
    }
    let distinct: HashSet<StreamId> = appended.iter().map(|(id, _)| *id).collect();
    assert_eq!(distinct.len(), 64, "duplicate ids: {appended:?}");
    appended.sort();
    let expected: Vec<Entry> = appended
        .iter()
        .map(|(id, d)| entry(*id, "chat.message", d))
        .collect();
    assert_eq!(held(&*store, &room).await, expected);
}

async fn history_latest_is_newest_n_oldest_first(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let all = append_n(&*store, &room, 30).await;
    assert_eq!(store.history(&room, Range::Latest, 10).await.unwrap(), all[20..]);
    assert_eq!(store.history(&room, Range::Latest, 1).await.unwrap(), all[29..]);
    assert_eq!(store.history(&room, Range::Latest, 30).await.unwrap(), all);
    assert_eq!(store.history(&room, Range::Latest, 1000).await.unwrap(), all);
}

async fn history_after_and_before_are_exclusive(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let all = append_n(&*store, &room, 30).await;
    let h = |r, n| {
        let store = store.clone();
        let room = room.clone();
        async move { store.history(&room, r, n).await.unwrap() }
    };
    assert_eq!(h(Range::After(all[10].id), 5).await, all[11..16]);
    assert_eq!(h(Range::Before(all[10].id), 5).await, all[5..10]);
    assert_eq!(h(Range::After(StreamId::ZERO), 3).await, all[..3]);
    assert_eq!(h(Range::Before(all[2].id), 100).await, all[..2]);
    assert_eq!(h(Range::After(all[27].id), 100).await, all[28..]);
    assert_eq!(h(Range::Before(MAX_ID), 4).await, all[26..]);
    // Nothing before the first or after the last, and edge cursors are not errors.
    assert_eq!(h(Range::Before(all[0].id), 100).await, []);
    assert_eq!(h(Range::After(all[29].id), 100).await, []);
    assert_eq!(h(Range::Before(StreamId::ZERO), 100).await, []);
    assert_eq!(h(Range::After(MAX_ID), 100).await, []);
}

async fn history_pages_through_250_entries_both_ways(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let all = append_n(&*store, &room, 250).await;

    let mut forward = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor = StreamId::ZERO;
    loop {
        let page = store.history(&room, Range::After(cursor), 100).await.unwrap();
        if page.is_empty() {
            break;
        }
        sizes.push(page.len());
        cursor = page.last().unwrap().id;
        forward.extend(page);
        assert!(sizes.len() <= 3, "too many forward pages");
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(forward, all);

    let mut pages = Vec::new();
    let mut page = store.history(&room, Range::Latest, 100).await.unwrap();
    while !page.is_empty() {
        let first = page[0].id;
        pages.push(page);
        assert!(pages.len() <= 3, "too many backward pages");
        page = store.history(&room, Range::Before(first), 100).await.unwrap();
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
    let backward: Vec<Entry> = pages.into_iter().rev().flatten().collect();
    assert_eq!(backward, all);
}

async fn history_of_unknown_channel_is_empty(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    append_n(&*store, &ch("room:1"), 3).await;
    let other = ch("room:2");
    for range in [
        Range::Latest,
        Range::After(StreamId::ZERO),
        Range::After(StreamId::new(5, 0)),
        Range::Before(MAX_ID),
    ] {
        assert_eq!(store.history(&other, range, 100).await.unwrap(), [], "{range:?}");
    }
}

async fn capping_keeps_at_least_max_len_newest(backend: Backend) {
    let max_len = 50;
    let store = open(&backend, Retention::default().max_len(max_len)).await;
    let room = ch("room:1");
    let all = append_n(&*store, &room, 400).await;
    let kept = held(&*store, &room).await;
    assert!(
        (max_len..=max_len + MAXLEN_SLACK).contains(&kept.len()),
        "holds {} entries; expected {max_len}..={}",
        kept.len(),
        max_len + MAXLEN_SLACK
    );
    // What is held is exactly the newest entries, in order: trimming removes oldest first.
    assert_eq!(kept, all[all.len() - kept.len()..]);
    assert_eq!(store.last_id(&room).await.unwrap(), all[399].id);
}

async fn capping_to_one(backend: Backend) {
    let store = open(&backend, Retention::default().max_len(0)).await; // clamped to 1
    let room = ch("room:1");
    let all = append_n(&*store, &room, 250).await;
    let kept = held(&*store, &room).await;
    assert!(
        (1..=1 + MAXLEN_SLACK).contains(&kept.len()),
        "holds {}",
        kept.len()
    );
    assert_eq!(kept, all[all.len() - kept.len()..]);
}

async fn replay_after_cursor_is_exact_when_untrimmed(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let all = append_n(&*store, &room, 20).await;
    for (i, e) in all.iter().enumerate() {
        let r = store.replay(&room, e.id, 100).await.unwrap();
        assert_eq!(r.trimmed, None, "after {}", e.id);
        assert_eq!(r.entries, all[i + 1..], "after {}", e.id);
    }
}

async fn replay_pages_with_limit(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let all = append_n(&*store, &room, 20).await;
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor = StreamId::ZERO;
    loop {
        let r = store.replay(&room, cursor, 7).await.unwrap();
        assert_eq!(r.trimmed, None);
        if r.entries.is_empty() {
            break;
        }
        sizes.push(r.entries.len());
        cursor = r.entries.last().unwrap().id;
        got.extend(r.entries);
        assert!(sizes.len() <= 3, "too many pages");
    }
    assert_eq!(sizes, [7, 7, 6]);
    assert_eq!(got, all);
}

async fn replay_reports_trim_past_cursor(backend: Backend) {
    let store = open(&backend, Retention::default().max_len(10)).await;
    let room = ch("room:1");
    let all = append_n(&*store, &room, 310).await;
    let kept = held(&*store, &room).await;
    assert!(kept.len() < 200, "not trimmed: holds {}", kept.len());
    let oldest = kept[0].id;

    // Cursors whose following entries are gone: trimmed, and everything still held comes back.
    for cursor in [all[0].id, all[5].id, all[150].id] {
        let r = store.replay(&room, cursor, 1000).await.unwrap();
        let t = trim_of(&r);
        assert_eq!(t.oldest, Some(oldest), "after {cursor}");
        assert!(
            t.resume_from < oldest,
            "resume_from {} not before oldest {oldest}",
            t.resume_from
        );
        assert!(
            t.resume_from >= cursor,
            "resume_from {} before cursor {cursor}",
            t.resume_from
        );
        assert_eq!(r.entries, kept, "after {cursor}");

        // The same with a small limit: the first page starts at the oldest held entry and the
        // pages that follow (from the last id read) are contiguous and not trimmed.
        let r = store.replay(&room, cursor, 4).await.unwrap();
        assert_eq!(trim_of(&r).resume_from, t.resume_from);
        assert_eq!(r.entries, kept[..4]);
        let mut got = r.entries;
        loop {
            let r = store.replay(&room, got.last().unwrap().id, 4).await.unwrap();
            assert_eq!(r.trimmed, None);
            if r.entries.is_empty() {
                break;
            }
            got.extend(r.entries);
        }
        assert_eq!(got, kept);
    }

    // A cursor inside what is held: nothing after it is gone.
    let r = store.replay(&room, kept[3].id, 1000).await.unwrap();
    assert_eq!(r.trimmed, None);
    assert_eq!(r.entries, kept[4..]);
}

async fn replay_cursor_from_zero(backend: Backend) {
    let store = open(&backend, Retention::default().max_len(10)).await;
    let (fresh, capped) = (ch("room:fresh"), ch("room:capped"));
    let fresh_all = append_n(&*store, &fresh, 5).await;
    let r = store.replay(&fresh, StreamId::ZERO, 100).await.unwrap();
    assert_eq!(r.trimmed, None, "nothing was ever trimmed from {fresh}");
    assert_eq!(r.entries, fresh_all);

    // From the very beginning of a channel that was trimmed: the start of history is gone.
    append_n(&*store, &capped, 310).await;
    let kept = held(&*store, &capped).await;
    let r = store.replay(&capped, StreamId::ZERO, 1000).await.unwrap();
    let t = trim_of(&r);
    assert_eq!(t.oldest, Some(kept[0].id));
    assert!(t.resume_from < kept[0].id);
    assert_eq!(r.entries, kept);
}

async fn replay_unknown_channel(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let elsewhere = append_n(&*store, &ch("room:1"), 1).await[0].id;
    let gone = ch("room:gone");
    for cursor in [elsewhere, StreamId::new(1, 0)] {
        let r = store.replay(&gone, cursor, 100).await.unwrap();
        assert_eq!(r.entries, []);
        let t = trim_of(&r);
        assert_eq!(t.oldest, None);
        assert_eq!(t.resume_from, cursor);
    }
    let r = store.replay(&gone, StreamId::ZERO, 100).await.unwrap();
    assert_eq!(r.trimmed, None);
    assert_eq!(r.entries, []);
}

async fn replay_cursor_ahead_of_stream(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let all = append_n(&*store, &room, 5).await;
    let last = all[4].id;
    for cursor in [last.successor(), StreamId::new(last.ms + 60_000, 0), MAX_ID] {
        let r = store.replay(&room, cursor, 100).await.unwrap();
        assert_eq!(r.entries, [], "after {cursor}");
        let t = trim_of(&r);
        assert_eq!(t.oldest, Some(all[0].id), "after {cursor}");
        assert_eq!(t.resume_from, last, "after {cursor}");
    }
}

async fn data_and_event_names_round_trip(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let big = format!(r#"{{"blob":"{}"}}"#, "xyz\\\"".repeat(10_000));
    let cases: Vec<(&str, &str)> = vec![
        ("chat.message", r#"{"text":"hi","user":"ada"}"#),
        (
            "chat.message",
            r#"{"text":"héllo wörld — 日本語 🎉 \u0000 \ud83d\ude00"}"#,
        ),
        (
            "chat.message",
            r#"{"q":"she said \"hi\" \\ then left","n":"a\nb\tc"}"#,
        ),
        (
            "presence.status",
            r#"{"a":{"b":[1,2.5,-3e10,{"c":null,"d":[true,false,[]]}],"e":{}}}"#,
        ),
        ("notification.alert", r#""just a string""#),
        ("x", "42"),
        ("x", "[]"),
        ("x", "null"),
        (
            "ns:sub-event_2.v1",
            r#"{"spaces": [ 1, 2 ] , "kept" : "as sent"}"#,
        ),
        ("évènement.日本", r#"{"k":"v"}"#),
        ("chat.message", &big),
    ];
    let mut expected = Vec::new();
    for (event, data) in &cases {
        let id = store.append(&room, event, data).await.unwrap();
        expected.push(entry(id, event, data));
    }
    assert_eq!(held(&*store, &room).await, expected);
    let r = store.replay(&room, StreamId::ZERO, 100).await.unwrap();
    assert_eq!(r.entries, expected);
    let batches = store
        .tail(&[(room.clone(), StreamId::ZERO)], PROMPT, 100)
        .await
        .unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].entries, expected);
}

async fn tail_returns_news_per_channel(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let (a, b, c, d) = (ch("a"), ch("b"), ch("c"), ch("d"));
    let in_a = append_n(&*store, &a, 4).await;
    let in_b = append_n(&*store, &b, 3).await;
    let in_c = append_n(&*store, &c, 2).await;
    let positions = [
        (a.clone(), in_a[0].id),
        (b.clone(), StreamId::ZERO),
        (c.clone(), in_c[1].id),     // up to date: no news
        (d.clone(), StreamId::ZERO), // does not exist
    ];
    let start = Instant::now();
    let batches = by_channel(store.tail(&positions, LONG_WAIT, 100).await.unwrap());
    assert!(
        start.elapsed() < PROMPT,
        "tail waited with news available: {:?}",
        start.elapsed()
    );
    assert_eq!(batches.len(), 2, "{batches:?}");
    assert_eq!(batches[0].channel, a);
    assert_eq!(batches[0].entries, in_a[1..]);
    assert!(!batches[0].gap);
    assert_eq!(batches[1].channel, b);
    assert_eq!(batches[1].entries, in_b);
    assert!(!batches[1].gap);
}

async fn tail_respects_count(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let (a, b) = (ch("a"), ch("b"));
    let in_a = append_n(&*store, &a, 10).await;
    let in_b = append_n(&*store, &b, 10).await;
    let positions = [(a.clone(), in_a[1].id), (b.clone(), StreamId::ZERO)];
    let batches = by_channel(store.tail(&positions, LONG_WAIT, 3).await.unwrap());
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].entries, in_a[2..5]);
    assert_eq!(batches[1].entries, in_b[..3]);
    let batches = store
        .tail(&[(a.clone(), in_a[8].id)], LONG_WAIT, 3)
        .await
        .unwrap();
    assert_eq!(batches[0].entries, in_a[9..]);
}

async fn tail_blocks_up_to_wait(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let a = ch("a");
    let last = append_n(&*store, &a, 2).await[1].id;
    let positions = [(a.clone(), last), (ch("nothing.here"), StreamId::ZERO)];
    let start = Instant::now();
    let batches = store
        .tail(&positions, Duration::from_millis(400), 10)
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(batches, []);
    assert!(
        took >= Duration::from_millis(350),
        "returned after {took:?}, before the wait"
    );
    assert!(took < PROMPT, "returned after {took:?}, far beyond the wait");
}

async fn tail_returns_promptly_on_append_to_watched_channel(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let (a, b) = (ch("a"), ch("b"));
    let last_a = append_n(&*store, &a, 1).await[0].id;
    let positions = [(a.clone(), last_a), (b.clone(), StreamId::ZERO)];
    let writer = tokio::spawn({
        let store = store.clone();
        let b = b.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            // Not watched: must not end the tail.
            store
                .append(&ch("unwatched"), "chat.message", "{}")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            store
                .append(&b, "chat.message", r#"{"late":true}"#)
                .await
                .unwrap()
        }
    });
    let start = Instant::now();
    let batches = store.tail(&positions, LONG_WAIT, 10).await.unwrap();
    let took = start.elapsed();
    let id = writer.await.unwrap();
    assert!(
        took >= Duration::from_millis(550),
        "returned after {took:?}, before the watched append"
    );
    assert!(
        took < PROMPT,
        "returned after {took:?}: the append did not end the wait"
    );
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].channel, b);
    assert_eq!(
        batches[0].entries,
        [entry(id, "chat.message", r#"{"late":true}"#)]
    );
    assert!(!batches[0].gap);
}

async fn tail_returns_promptly_on_wake_from_other_task(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let a = ch("a");
    let last = append_n(&*store, &a, 1).await[0].id;
    let positions = [(a.clone(), last)];
    let waker = tokio::spawn({
        let store = store.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            store.wake().await.unwrap();
        }
    });
    let start = Instant::now();
    let batches = store.tail(&positions, LONG_WAIT, 10).await.unwrap();
    let took = start.elapsed();
    waker.await.unwrap();
    assert_eq!(batches, []);
    assert!(
        took >= Duration::from_millis(250),
        "returned after {took:?}, before the wake"
    );
    assert!(
        took < PROMPT,
        "returned after {took:?}: wake did not end the wait"
    );

    // The wake was used up: the next tail waits again, and still sees appends.
    let start = Instant::now();
    assert_eq!(
        store
            .tail(&positions, Duration::from_millis(300), 10)
            .await
            .unwrap(),
        []
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "a used wake ended another tail"
    );
    let id = store.append(&a, "chat.message", "{}").await.unwrap();
    let batches = store.tail(&positions, LONG_WAIT, 10).await.unwrap();
    assert_eq!(ids(&batches[0].entries), [id]);
}

async fn wake_before_tail_is_not_lost(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let a = ch("a");
    let last = append_n(&*store, &a, 1).await[0].id;
    let positions = [(a.clone(), last)];
    store.wake().await.unwrap();
    let start = Instant::now();
    let batches = store.tail(&positions, LONG_WAIT, 10).await.unwrap();
    let took = start.elapsed();
    assert_eq!(batches, []);
    assert!(took < PROMPT, "a wake before the tail was lost: waited {took:?}");

    let start = Instant::now();
    assert_eq!(
        store
            .tail(&positions, Duration::from_millis(300), 10)
            .await
            .unwrap(),
        []
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "one wake ended two tails"
    );
}

async fn tail_reports_gap_when_trimmed_past_position(backend: Backend) {
    let store = open(&backend, Retention::default().max_len(10)).await;
    let room = ch("room:1");
    let first = append_n(&*store, &room, 5).await;
    append_n(&*store, &room, 310).await;
    let kept = held(&*store, &room).await;
    assert!(kept.len() < 200, "not trimmed: holds {}", kept.len());

    let batches = store
        .tail(&[(room.clone(), first[2].id)], PROMPT, 1000)
        .await
        .unwrap();
    assert_eq!(batches.len(), 1);
    assert!(
        batches[0].gap,
        "entries after {} were trimmed unread",
        first[2].id
    );
    assert_eq!(batches[0].entries, kept);

    // From the start of a channel that has been trimmed since.
    let batches = store
        .tail(&[(room.clone(), StreamId::ZERO)], PROMPT, 1000)
        .await
        .unwrap();
    assert_eq!(batches.len(), 1);
    assert!(batches[0].gap, "entries after 0-0 were trimmed unread");
    assert_eq!(batches[0].entries, kept);
}

async fn tail_reports_no_gap_when_contiguous(backend: Backend) {
    let store = open(&backend, Retention::default().max_len(10)).await;
    let (capped, fresh) = (ch("room:capped"), ch("room:fresh"));
    append_n(&*store, &capped, 310).await;
    let kept = held(&*store, &capped).await;
    // From an entry still held (the newest, so later trimming cannot reach it either).
    let pos = kept.last().unwrap().id;
    let more = append_n(&*store, &capped, 3).await;
    let in_fresh = append_n(&*store, &fresh, 4).await;
    let positions = [(capped.clone(), pos), (fresh.clone(), StreamId::ZERO)];
    let batches = by_channel(store.tail(&positions, PROMPT, 1000).await.unwrap());
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].entries, more);
    assert!(!batches[0].gap, "nothing after {pos} was trimmed");
    assert_eq!(batches[1].entries, in_fresh);
    assert!(!batches[1].gap, "nothing was ever trimmed from {fresh}");
    let batches = store
        .tail(&[(fresh.clone(), in_fresh[0].id)], PROMPT, 1000)
        .await
        .unwrap();
    assert_eq!(batches[0].entries, in_fresh[1..]);
    assert!(!batches[0].gap);
}

async fn ttl_drops_idle_channel_and_append_refreshes(backend: Backend) {
    // Memory: virtual time, so a long TTL costs nothing. Redis: its own clock, so a short one.
    let ttl = if is_memory(&backend) {
        tokio::time::pause();
        Duration::from_secs(60)
    } else {
        Duration::from_secs(1)
    };
    let store = open(&backend, Retention::default().ttl(ttl)).await;
    let (room, other) = (ch("room:1"), ch("room:2"));
    let e1 = store.append(&room, "chat.message", r#"{"n":1}"#).await.unwrap();
    pass(&backend, ttl / 2).await;
    let e2 = store.append(&room, "chat.message", r#"{"n":2}"#).await.unwrap();
    let o1 = store.append(&other, "chat.message", r#"{"o":1}"#).await.unwrap();
    pass(&backend, ttl * 6 / 10).await;

    // 1.1 TTL after the first append, 0.6 after the second: the append kept the channel alive.
    assert_eq!(ids(&held(&*store, &room).await), [e1, e2]);
    assert_eq!(store.last_id(&room).await.unwrap(), e2);
    assert_eq!(store.replay(&room, e1, 10).await.unwrap().trimmed, None);

    pass(&backend, ttl * 6 / 10).await;
    // 1.2 TTL after the last append to either channel: both are gone.
    for (channel, cursor) in [(&room, e2), (&other, o1)] {
        assert_eq!(held(&*store, channel).await, [], "{channel}");
        let after_zero = store
            .history(channel, Range::After(StreamId::ZERO), 10)
            .await
            .unwrap();
        assert_eq!(after_zero, [], "{channel}");
        assert_eq!(store.last_id(channel).await.unwrap(), StreamId::ZERO, "{channel}");
        let r = store.replay(channel, cursor, 10).await.unwrap();
        assert_eq!(r.entries, [], "{channel}");
        let t = trim_of(&r);
        assert_eq!(t.oldest, None, "{channel}");
        assert_eq!(t.resume_from, cursor, "{channel}");
        assert_eq!(
            store.replay(channel, StreamId::ZERO, 10).await.unwrap().trimmed,
            None
        );
    }
    // The channel starts again on the next append.
    let e3 = store.append(&room, "chat.message", r#"{"n":3}"#).await.unwrap();
    assert_eq!(
        held(&*store, &room).await,
        [entry(e3, "chat.message", r#"{"n":3}"#)]
    );
    assert_eq!(store.last_id(&room).await.unwrap(), e3);
}

// ---------------------------------------------------------------------------------------------
// Redis only
// ---------------------------------------------------------------------------------------------

mod redis_only {
    use super::*;

    async fn connect(server: &RedisServer, prefix: &str) -> RedisStore {
        RedisStore::connect(RedisOptions::new(server.url()).key_prefix(prefix))
            .await
            .unwrap()
    }

    async fn raw(server: &RedisServer) -> ::redis::aio::MultiplexedConnection {
        server.client().get_multiplexed_async_connection().await.unwrap()
    }

    fn assert_malformed<T: std::fmt::Debug>(r: Result<T, StoreError>, channel: &str, id: &str) {
        match r {
            Err(e @ StoreError::Malformed { .. }) => {
                assert!(!e.is_transient());
                let text = e.to_string();
                let StoreError::Malformed {
                    channel: c, id: i, ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(c, channel);
                assert_eq!(i, id);
                assert!(text.contains(channel) && text.contains(id), "{text}");
            }
            other => panic!("expected Malformed for {channel} {id}, got {other:?}"),
        }
    }

    /// Appends from many tasks leave in pipelines: every reply still belongs to its own append,
    /// and a command that fails fails alone (here XADD on a key that is not a stream).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_appends_get_their_own_ids_and_fail_one_by_one() {
        let server = RedisServer::start();
        let store = Arc::new(connect(&server, "t:").await);
        let mut conn = raw(&server).await;
        let _: () = ::redis::cmd("SET")
            .arg("t:not-a-stream")
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
        let (good, bad) = (ch("good"), ch("not-a-stream"));
        let tasks: Vec<_> = (0..2000)
            .map(|i| {
                let store = store.clone();
                let channel = if i % 5 == 0 { bad.clone() } else { good.clone() };
                tokio::spawn(async move {
                    let data = data_of(i);
                    (
                        i,
                        data.clone(),
                        store.append(&channel, "chat.message", &data).await,
                    )
                })
            })
            .collect();
        let mut appended = Vec::new();
        for t in tasks {
            let (i, data, result) = t.await.unwrap();
            if i % 5 == 0 {
                let e = result.expect_err("XADD on a string key fails");
                assert!(e.to_string().contains("WRONGTYPE"), "{e}");
            } else {
                appended.push((result.unwrap(), data));
            }
        }
        assert_eq!(appended.len(), 1600);
        appended.sort();
        let expected: Vec<Entry> = appended
            .iter()
            .map(|(id, d)| entry(*id, "chat.message", d))
            .collect();
        let held = store.history(&good, Range::Latest, 1000).await.unwrap();
        assert_eq!(
            held,
            expected[600..],
            "the newest 1000, each under the id its append returned"
        );
    }

    #[tokio::test]
    async fn entry_missing_fields_is_malformed_naming_the_channel() {
        let server = RedisServer::start();
        let store = connect(&server, "t:").await;
        let mut conn = raw(&server).await;
        let no_fields: String = ::redis::cmd("XADD")
            .arg("t:bad1")
            .arg("*")
            .arg("x")
            .arg("1")
            .query_async(&mut conn)
            .await
            .unwrap();
        let no_data: String = ::redis::cmd("XADD")
            .arg("t:bad2")
            .arg("*")
            .arg("e")
            .arg("chat.message")
            .query_async(&mut conn)
            .await
            .unwrap();
        for (name, id) in [("bad1", &no_fields), ("bad2", &no_data)] {
            let channel = ch(name);
            assert_malformed(store.history(&channel, Range::Latest, 10).await, name, id);
            assert_malformed(
                store.history(&channel, Range::After(StreamId::ZERO), 10).await,
                name,
                id,
            );
            assert_malformed(store.replay(&channel, StreamId::ZERO, 10).await, name, id);
            let positions = [(channel.clone(), StreamId::ZERO)];
            assert_malformed(store.tail(&positions, PROMPT, 10).await, name, id);
        }
        // The store keeps working for well-formed channels.
        let good = ch("good");
        let id = store.append(&good, "chat.message", "{}").await.unwrap();
        assert_eq!(store.last_id(&good).await.unwrap(), id);
    }

    #[tokio::test]
    async fn data_spanning_lines_comes_back_compacted() {
        let server = RedisServer::start();
        let store = connect(&server, "t:").await;
        let mut conn = raw(&server).await;
        let id: String = ::redis::cmd("XADD")
            .arg("t:room:1")
            .arg("*")
            .arg("e")
            .arg("chat.message")
            .arg("d")
            .arg("{\n\"a\": 1,\r\n  \"b\": [1,\n 2]\n}")
            .query_async(&mut conn)
            .await
            .unwrap();
        let want = [entry(id.parse().unwrap(), "chat.message", r#"{"a":1,"b":[1,2]}"#)];
        let room = ch("room:1");
        assert_eq!(store.history(&room, Range::Latest, 10).await.unwrap(), want);
        assert_eq!(
            store.replay(&room, StreamId::ZERO, 10).await.unwrap().entries,
            want
        );
        let batches = store
            .tail(&[(room.clone(), StreamId::ZERO)], PROMPT, 10)
            .await
            .unwrap();
        assert_eq!(batches[0].entries, want);
    }

    #[tokio::test]
    async fn keys_are_prefix_then_channel_with_fields_e_and_d() {
        let server = RedisServer::start();
        let store = connect(&server, "myapp:").await;
        let other = connect(&server, "other:").await;
        let room = ch("room:1");
        let all = append_n(&store, &room, 3).await;
        let mut conn = raw(&server).await;
        let len: usize = ::redis::cmd("XLEN")
            .arg("myapp:room:1")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(len, 3);
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(keys, ["myapp:room:1"]);
        let raw_entries: Vec<(String, Vec<String>)> = ::redis::cmd("XRANGE")
            .arg("myapp:room:1")
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        let (raw_id, fields) = &raw_entries[0];
        assert_eq!(raw_id, &all[0].id.to_string());
        assert_eq!(fields, &["e", "chat.message", "d", &data_of(0)]);
        // Another prefix is another namespace on the same server.
        assert_eq!(other.last_id(&room).await.unwrap(), StreamId::ZERO);
        other.append(&room, "chat.message", "{}").await.unwrap();
        let len: usize = ::redis::cmd("XLEN")
            .arg("other:room:1")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(len, 1);
        assert_eq!(held(&store, &room).await, all);
    }

    #[tokio::test]
    async fn ttl_is_set_on_the_key_by_every_append() {
        let server = RedisServer::start();
        let store = RedisStore::connect(
            RedisOptions::new(server.url())
                .key_prefix("t:")
                .retention(Retention::default().ttl(Duration::from_secs(100))),
        )
        .await
        .unwrap();
        let room = ch("room:1");
        let mut conn = raw(&server).await;
        store.append(&room, "chat.message", "{}").await.unwrap();
        let _: () = ::redis::cmd("PEXPIRE")
            .arg("t:room:1")
            .arg(5000)
            .query_async(&mut conn)
            .await
            .unwrap();
        store.append(&room, "chat.message", "{}").await.unwrap();
        let pttl: i64 = ::redis::cmd("PTTL")
            .arg("t:room:1")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((90_000..=100_000).contains(&pttl), "PTTL {pttl}");
    }

    #[tokio::test]
    async fn server_gone_gives_transient_errors() {
        let server = RedisServer::start();
        let store = connect(&server, "t:").await;
        let room = ch("room:1");
        let id = store.append(&room, "chat.message", "{}").await.unwrap();
        // Open the tail's own connection while the server is up.
        store.wake().await.unwrap();
        store.tail(&[(room.clone(), id)], PROMPT, 10).await.unwrap();
        drop(server);

        let start = Instant::now();
        let check = |what: &str, r: Result<(), StoreError>| match r {
            Err(e) => assert!(e.is_transient(), "{what}: {e} is not transient"),
            Ok(()) => panic!("{what} succeeded with the server gone"),
        };
        check(
            "append",
            store.append(&room, "chat.message", "{}").await.map(drop),
        );
        check("history", store.history(&room, Range::Latest, 10).await.map(drop));
        check("replay", store.replay(&room, id, 10).await.map(drop));
        check("last_id", store.last_id(&room).await.map(drop));
        check(
            "tail",
            store.tail(&[(room.clone(), id)], PROMPT, 10).await.map(drop),
        );
        check(
            "tail again",
            store.tail(&[(room.clone(), id)], PROMPT, 10).await.map(drop),
        );
        if store.tail_mode() == TailMode::Xread {
            // In keyspace mode a wake is local to the node and rightly succeeds.
            check("wake", store.wake().await);
        }
        check("ping", store.ping().await);
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "errors took {:?}",
            start.elapsed()
        );
    }
}
