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

use support::{at, pos, Backend, RedisServer};
use tidings::store::{AppendOptions, Position, Replay, TailBatch, Trimmed};
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
        let id = store
            .append(channel, "chat.message", &data, AppendOptions::default())
            .await
            .unwrap()
            .id;
        out.push(entry(id, "chat.message", &data));
    }
    out
}

/// Everything the channel holds, oldest first.
async fn held(store: &dyn Store, channel: &Channel) -> Vec<Entry> {
    store
        .history(channel, Range::Latest, 1_000_000)
        .await
        .unwrap()
        .entries
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
    every_read_names_the_epoch_which_lasts_as_long_as_the_stream,
    a_stream_created_again_is_another_epoch_and_resumes_from_its_start,
    a_position_without_epoch_is_checked_by_id_alone,
    a_tail_from_another_epoch_is_flagged,
    idempotent_appends_store_once_per_channel_and_key,
    concurrent_retries_of_one_key_store_once,
    idempotency_keys_are_forgotten_after_the_window,
    presence_joins_members_once_and_leaves_with_the_last_connection,
    presence_sweeps_lapsed_connections_and_refresh_keeps_them,
    presence_refuses_a_new_member_beyond_the_limit,
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
        appended.push(
            store
                .append(&room, "chat.message", &data_of(i), AppendOptions::default())
                .await
                .unwrap()
                .id,
        );
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
    assert_eq!(store.position(&room).await.unwrap().id, StreamId::ZERO);
    for i in 0..20 {
        let id = store
            .append(&room, "chat.message", &data_of(i), AppendOptions::default())
            .await
            .unwrap()
            .id;
        assert_eq!(store.position(&room).await.unwrap().id, id);
    }
    assert_eq!(
        store.position(&ch("never.written")).await.unwrap().id,
        StreamId::ZERO
    );
}

async fn channels_are_independent(backend: Backend) {
    let store = open(&backend, Retention::default().max_len(5)).await;
    let (a, b) = (ch("room:a"), ch("room:b"));
    let in_a = append_n(&*store, &a, 3).await;
    let mut in_b = Vec::new();
    for i in 0..400 {
        let data = format!(r#"{{"b":{i}}}"#);
        let id = store
            .append(&b, "user.typing", &data, AppendOptions::default())
            .await
            .unwrap()
            .id;
        in_b.push(entry(id, "user.typing", &data));
    }
    // b was trimmed hard; a is untouched by b's appends and trimming.
    assert_eq!(store.position(&a).await.unwrap().id, in_a[2].id);
    assert_eq!(held(&*store, &a).await, in_a);
    assert_eq!(
        store
            .replay(&a, Position::from(StreamId::ZERO), 100)
            .await
            .unwrap()
            .trimmed,
        None
    );
    let b_held = held(&*store, &b).await;
    assert_eq!(b_held.last(), in_b.last());
    assert!(b_held.iter().all(|e| &*e.event == "user.typing"));
    assert_eq!(store.position(&b).await.unwrap().id, in_b[399].id);
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
                let id = store
                    .append(&room, "chat.message", &data, AppendOptions::default())
                    .await
                    .unwrap()
                    .id;
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
    assert_eq!(
        store.history(&room, Range::Latest, 10).await.unwrap().entries,
        all[20..]
    );
    assert_eq!(
        store.history(&room, Range::Latest, 1).await.unwrap().entries,
        all[29..]
    );
    assert_eq!(
        store.history(&room, Range::Latest, 30).await.unwrap().entries,
        all
    );
    assert_eq!(
        store.history(&room, Range::Latest, 1000).await.unwrap().entries,
        all
    );
}

async fn history_after_and_before_are_exclusive(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let all = append_n(&*store, &room, 30).await;
    let h = |r, n| {
        let store = store.clone();
        let room = room.clone();
        async move { store.history(&room, r, n).await.unwrap().entries }
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
        let page = store
            .history(&room, Range::After(cursor), 100)
            .await
            .unwrap()
            .entries;
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
    let mut page = store.history(&room, Range::Latest, 100).await.unwrap().entries;
    while !page.is_empty() {
        let first = page[0].id;
        pages.push(page);
        assert!(pages.len() <= 3, "too many backward pages");
        page = store
            .history(&room, Range::Before(first), 100)
            .await
            .unwrap()
            .entries;
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
        assert_eq!(
            store.history(&other, range, 100).await.unwrap().entries,
            [],
            "{range:?}"
        );
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
    assert_eq!(store.position(&room).await.unwrap().id, all[399].id);
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
        let r = store
            .replay(&room, pos(&*store, &room, e.id).await, 100)
            .await
            .unwrap();
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
        let r = store
            .replay(&room, pos(&*store, &room, cursor).await, 7)
            .await
            .unwrap();
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
        let r = store
            .replay(&room, pos(&*store, &room, cursor).await, 1000)
            .await
            .unwrap();
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
        let r = store
            .replay(&room, pos(&*store, &room, cursor).await, 4)
            .await
            .unwrap();
        assert_eq!(trim_of(&r).resume_from, t.resume_from);
        assert_eq!(r.entries, kept[..4]);
        let mut got = r.entries;
        // Bounded: a page that does not move on must fail the test, not spin.
        for page in 0.. {
            assert!(
                page <= kept.len(),
                "paging did not end: {} entries read",
                got.len()
            );
            let r = store
                .replay(&room, pos(&*store, &room, got.last().unwrap().id).await, 4)
                .await
                .unwrap();
            assert_eq!(r.trimmed, None);
            if r.entries.is_empty() {
                break;
            }
            got.extend(r.entries);
        }
        assert_eq!(got, kept);
    }

    // A cursor inside what is held: nothing after it is gone.
    let r = store
        .replay(&room, pos(&*store, &room, kept[3].id).await, 1000)
        .await
        .unwrap();
    assert_eq!(r.trimmed, None);
    assert_eq!(r.entries, kept[4..]);
}

async fn replay_cursor_from_zero(backend: Backend) {
    let store = open(&backend, Retention::default().max_len(10)).await;
    let (fresh, capped) = (ch("room:fresh"), ch("room:capped"));
    let fresh_all = append_n(&*store, &fresh, 5).await;
    let r = store
        .replay(&fresh, Position::from(StreamId::ZERO), 100)
        .await
        .unwrap();
    assert_eq!(r.trimmed, None, "nothing was ever trimmed from {fresh}");
    assert_eq!(r.entries, fresh_all);

    // From the very beginning of a channel that was trimmed: the start of history is gone.
    append_n(&*store, &capped, 310).await;
    let kept = held(&*store, &capped).await;
    let r = store
        .replay(&capped, Position::from(StreamId::ZERO), 1000)
        .await
        .unwrap();
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
        let r = store
            .replay(&gone, pos(&*store, &gone, cursor).await, 100)
            .await
            .unwrap();
        assert_eq!(r.entries, []);
        let t = trim_of(&r);
        assert_eq!(t.oldest, None);
        assert_eq!(t.resume_from, cursor);
    }
    let r = store
        .replay(&gone, Position::from(StreamId::ZERO), 100)
        .await
        .unwrap();
    assert_eq!(r.trimmed, None);
    assert_eq!(r.entries, []);
}

async fn replay_cursor_ahead_of_stream(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let all = append_n(&*store, &room, 5).await;
    let last = all[4].id;
    for cursor in [last.successor(), StreamId::new(last.ms + 60_000, 0), MAX_ID] {
        let r = store
            .replay(&room, pos(&*store, &room, cursor).await, 100)
            .await
            .unwrap();
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
        let id = store
            .append(&room, event, data, AppendOptions::default())
            .await
            .unwrap()
            .id;
        expected.push(entry(id, event, data));
    }
    assert_eq!(held(&*store, &room).await, expected);
    let r = store
        .replay(&room, Position::from(StreamId::ZERO), 100)
        .await
        .unwrap();
    assert_eq!(r.entries, expected);
    let batches = store
        .tail(&[(room.clone(), Position::from(StreamId::ZERO))], PROMPT, 100)
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
    let batches = by_channel(store.tail(&at(&positions), LONG_WAIT, 100).await.unwrap());
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
    let batches = by_channel(store.tail(&at(&positions), LONG_WAIT, 3).await.unwrap());
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].entries, in_a[2..5]);
    assert_eq!(batches[1].entries, in_b[..3]);
    let batches = store
        .tail(&[(a.clone(), Position::from(in_a[8].id))], LONG_WAIT, 3)
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
        .tail(&at(&positions), Duration::from_millis(400), 10)
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
                .append(&ch("unwatched"), "chat.message", "{}", AppendOptions::default())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            store
                .append(&b, "chat.message", r#"{"late":true}"#, AppendOptions::default())
                .await
                .unwrap()
        }
    });
    let start = Instant::now();
    let batches = store.tail(&at(&positions), LONG_WAIT, 10).await.unwrap();
    let took = start.elapsed();
    let id = writer.await.unwrap().id;
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
    let batches = store.tail(&at(&positions), LONG_WAIT, 10).await.unwrap();
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
            .tail(&at(&positions), Duration::from_millis(300), 10)
            .await
            .unwrap(),
        []
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "a used wake ended another tail"
    );
    let id = store
        .append(&a, "chat.message", "{}", AppendOptions::default())
        .await
        .unwrap()
        .id;
    let batches = store.tail(&at(&positions), LONG_WAIT, 10).await.unwrap();
    assert_eq!(ids(&batches[0].entries), [id]);
}

async fn wake_before_tail_is_not_lost(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let a = ch("a");
    let last = append_n(&*store, &a, 1).await[0].id;
    let positions = [(a.clone(), last)];
    store.wake().await.unwrap();
    let start = Instant::now();
    let batches = store.tail(&at(&positions), LONG_WAIT, 10).await.unwrap();
    let took = start.elapsed();
    assert_eq!(batches, []);
    assert!(took < PROMPT, "a wake before the tail was lost: waited {took:?}");

    let start = Instant::now();
    assert_eq!(
        store
            .tail(&at(&positions), Duration::from_millis(300), 10)
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
        .tail(&[(room.clone(), Position::from(first[2].id))], PROMPT, 1000)
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
        .tail(&[(room.clone(), Position::from(StreamId::ZERO))], PROMPT, 1000)
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
    let batches = by_channel(store.tail(&at(&positions), PROMPT, 1000).await.unwrap());
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].entries, more);
    assert!(!batches[0].gap, "nothing after {pos} was trimmed");
    assert_eq!(batches[1].entries, in_fresh);
    assert!(!batches[1].gap, "nothing was ever trimmed from {fresh}");
    let batches = store
        .tail(&[(fresh.clone(), Position::from(in_fresh[0].id))], PROMPT, 1000)
        .await
        .unwrap();
    assert_eq!(batches[0].entries, in_fresh[1..]);
    assert!(!batches[0].gap);
}

async fn ttl_drops_idle_channel_and_append_refreshes(backend: Backend) {
    // Memory: virtual time, so a long TTL costs nothing. Redis: its own clock, so a short one,
    // but 2 s: the checks below have 0.4 TTL of margin, and a loaded machine oversleeps 0.4 s.
    let ttl = if is_memory(&backend) {
        tokio::time::pause();
        Duration::from_secs(60)
    } else {
        Duration::from_secs(2)
    };
    let store = open(&backend, Retention::default().ttl(ttl)).await;
    let (room, other) = (ch("room:1"), ch("room:2"));
    let e1 = store
        .append(&room, "chat.message", r#"{"n":1}"#, AppendOptions::default())
        .await
        .unwrap()
        .id;
    pass(&backend, ttl / 2).await;
    let e2 = store
        .append(&room, "chat.message", r#"{"n":2}"#, AppendOptions::default())
        .await
        .unwrap()
        .id;
    let o1 = store
        .append(&other, "chat.message", r#"{"o":1}"#, AppendOptions::default())
        .await
        .unwrap()
        .id;
    pass(&backend, ttl * 6 / 10).await;

    // 1.1 TTL after the first append, 0.6 after the second: the append kept the channel alive.
    assert_eq!(ids(&held(&*store, &room).await), [e1, e2]);
    assert_eq!(store.position(&room).await.unwrap().id, e2);
    assert_eq!(
        store
            .replay(&room, pos(&*store, &room, e1).await, 10)
            .await
            .unwrap()
            .trimmed,
        None
    );

    pass(&backend, ttl * 6 / 10).await;
    // 1.2 TTL after the last append to either channel: both are gone.
    for (channel, cursor) in [(&room, e2), (&other, o1)] {
        assert_eq!(held(&*store, channel).await, [], "{channel}");
        let after_zero = store
            .history(channel, Range::After(StreamId::ZERO), 10)
            .await
            .unwrap()
            .entries;
        assert_eq!(after_zero, [], "{channel}");
        assert_eq!(
            store.position(channel).await.unwrap().id,
            StreamId::ZERO,
            "{channel}"
        );
        let r = store
            .replay(channel, pos(&*store, channel, cursor).await, 10)
            .await
            .unwrap();
        assert_eq!(r.entries, [], "{channel}");
        let t = trim_of(&r);
        assert_eq!(t.oldest, None, "{channel}");
        assert_eq!(t.resume_from, cursor, "{channel}");
        assert_eq!(
            store
                .replay(channel, Position::from(StreamId::ZERO), 10)
                .await
                .unwrap()
                .trimmed,
            None
        );
    }
    // The channel starts again on the next append.
    let e3 = store
        .append(&room, "chat.message", r#"{"n":3}"#, AppendOptions::default())
        .await
        .unwrap()
        .id;
    assert_eq!(
        held(&*store, &room).await,
        [entry(e3, "chat.message", r#"{"n":3}"#)]
    );
    assert_eq!(store.position(&room).await.unwrap().id, e3);
}

/// A short TTL that lets a channel's stream expire and be created again: virtual on the
/// (paused) memory store, one second on Redis.
fn short_ttl(backend: &Backend) -> Duration {
    if is_memory(backend) {
        tokio::time::pause();
        Duration::from_secs(60)
    } else {
        Duration::from_secs(1)
    }
}

async fn append_once(store: &dyn Store, channel: &Channel, data: &str, key: &str) -> tidings::Appended {
    let opts = AppendOptions::default().idempotency_key(key);
    store.append(channel, "chat.message", data, opts).await.unwrap()
}

async fn every_read_names_the_epoch_which_lasts_as_long_as_the_stream(backend: Backend) {
    let store = open(&backend, Retention::default().max_len(5)).await;
    let room = ch("room:1");
    assert_eq!(
        store.position(&room).await.unwrap(),
        Position::ZERO,
        "no stream, no epoch"
    );
    assert_eq!(store.history(&room, Range::Latest, 10).await.unwrap().epoch, None);
    let first = append_n(&*store, &room, 3).await;
    let here = store.position(&room).await.unwrap();
    let epoch = here.epoch.expect("a stream tidings created has an epoch");
    assert_eq!(here.id, first[2].id);
    append_n(&*store, &room, 20).await; // trimmed many times over: still the same history
    let r = store.replay(&room, here, 100).await.unwrap();
    assert_eq!(r.epoch, Some(epoch));
    assert_eq!(store.position(&room).await.unwrap().epoch, Some(epoch));
    for range in [
        Range::Latest,
        Range::After(first[0].id),
        Range::Before(StreamId::new(u64::MAX, 0)),
    ] {
        assert_eq!(
            store.history(&room, range, 10).await.unwrap().epoch,
            Some(epoch),
            "{range:?}"
        );
    }
    // Another channel's stream is another history.
    let other = ch("room:2");
    append_n(&*store, &other, 1).await;
    assert_ne!(store.position(&other).await.unwrap().epoch, Some(epoch));
}

/// The fault of the issue: a history lost and started again (a restart without persistence, a
/// deleted or expired key) gets new ids greater than the old cursor. Only the epoch tells.
async fn a_stream_created_again_is_another_epoch_and_resumes_from_its_start(backend: Backend) {
    let ttl = short_ttl(&backend);
    let store = open(&backend, Retention::default().ttl(ttl)).await;
    let room = ch("room:1");
    let old = append_n(&*store, &room, 2).await;
    let cursor = pos(&*store, &room, old[0].id).await;
    pass(&backend, ttl + ttl / 5).await;
    // Ids come from the wall clock, which virtual time does not move.
    std::thread::sleep(Duration::from_millis(3));
    let new = append_n(&*store, &room, 2).await;
    assert!(
        new[0].id > old[1].id,
        "the new ids follow the old ones: by id, nothing looks lost"
    );
    let now = store.position(&room).await.unwrap();
    assert_ne!(now.epoch, cursor.epoch, "created again: another epoch");
    let r = store.replay(&room, cursor, 100).await.unwrap();
    let t = trim_of(&r);
    assert_eq!(t.reason, tidings::store::Lost::Replaced);
    assert_eq!(t.resume_from, StreamId::ZERO);
    assert_eq!(t.oldest, Some(new[0].id));
    assert_eq!(r.entries, new, "everything of the new history");
    assert_eq!(r.epoch, now.epoch);
    // A resume in the new epoch is exact again.
    let r = store
        .replay(&room, Position::new(new[0].id, now.epoch), 100)
        .await
        .unwrap();
    assert_eq!((r.entries, r.trimmed), (new[1..].to_vec(), None));
}

async fn a_position_without_epoch_is_checked_by_id_alone(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let all = append_n(&*store, &room, 4).await;
    let r = store.replay(&room, Position::from(all[1].id), 100).await.unwrap();
    assert_eq!(
        (r.entries, r.trimmed),
        (all[2..].to_vec(), None),
        "as cursors before epochs"
    );
    let r = store
        .replay(&room, Position::from(StreamId::new(u64::MAX, 0)), 100)
        .await
        .unwrap();
    assert_eq!(trim_of(&r).reason, tidings::store::Lost::Ahead);
    let r = store
        .replay(&room, Position::from(StreamId::ZERO), 100)
        .await
        .unwrap();
    assert_eq!((r.entries, r.trimmed), (all, None));
}

async fn a_tail_from_another_epoch_is_flagged(backend: Backend) {
    let ttl = short_ttl(&backend);
    let store = open(&backend, Retention::default().ttl(ttl)).await;
    let room = ch("room:1");
    let old = append_n(&*store, &room, 2).await;
    let from = pos(&*store, &room, old[1].id).await;
    pass(&backend, ttl + ttl / 5).await;
    let new = append_n(&*store, &room, 2).await;
    let batches = store.tail(&[(room.clone(), from)], PROMPT, 100).await.unwrap();
    assert_eq!(batches.len(), 1, "{batches:?}");
    let b = &batches[0];
    assert!(
        b.gap || b.epoch != from.epoch,
        "the batch must not look like it follows on from the old position: {b:?}"
    );
    assert_eq!(b.epoch, store.position(&room).await.unwrap().epoch);
    assert!(b.entries.iter().all(|e| new.iter().any(|n| n.id == e.id)));
}

async fn idempotent_appends_store_once_per_channel_and_key(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let (room, other) = (ch("room:1"), ch("room:2"));
    let first = append_once(&*store, &room, r#"{"n":1}"#, "order-42").await;
    assert!(!first.duplicate);
    let retry = append_once(&*store, &room, r#"{"n":1}"#, "order-42").await;
    assert_eq!(
        (retry.id, retry.duplicate),
        (first.id, true),
        "a retry returns the first id"
    );
    let elsewhere = append_once(&*store, &other, r#"{"n":1}"#, "order-42").await;
    assert!(!elsewhere.duplicate, "keys are per channel");
    let another = append_once(&*store, &room, r#"{"n":2}"#, "order-43").await;
    assert!(!another.duplicate && another.id > first.id);
    let plain = store
        .append(&room, "chat.message", "{}", AppendOptions::default())
        .await
        .unwrap();
    assert!(!plain.duplicate);
    assert_eq!(
        ids(&held(&*store, &room).await),
        [first.id, another.id, plain.id],
        "the retry stored nothing"
    );
    assert_eq!(ids(&held(&*store, &other).await), [elsewhere.id]);
}

async fn concurrent_retries_of_one_key_store_once(backend: Backend) {
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (store, room) = (store.clone(), room.clone());
            tokio::spawn(async move { append_once(&*store, &room, "{}", "same-key").await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let firsts = results.iter().filter(|a| !a.duplicate).count();
    assert_eq!(firsts, 1, "exactly one append stored it: {results:?}");
    assert!(results.iter().all(|a| a.id == results[0].id), "{results:?}");
    assert_eq!(ids(&held(&*store, &room).await), [results[0].id]);
}

async fn idempotency_keys_are_forgotten_after_the_window(backend: Backend) {
    // Redis: real time, with a second of margin each way for a loaded machine.
    let window = if is_memory(&backend) {
        tokio::time::pause();
        Duration::from_secs(300)
    } else {
        Duration::from_secs(2)
    };
    let store = open(&backend, Retention::default()).await;
    let room = ch("room:1");
    let once = |store: Arc<dyn Store>| {
        let room = room.clone();
        async move {
            let opts = AppendOptions::default()
                .idempotency_key("k")
                .idempotency_window(window);
            store.append(&room, "chat.message", "{}", opts).await.unwrap()
        }
    };
    let first = once(store.clone()).await;
    pass(&backend, window / 2).await;
    assert!(once(store.clone()).await.duplicate, "within the window");
    pass(&backend, window * 3 / 4 + Duration::from_millis(100)).await;
    let later = once(store.clone()).await;
    assert!(
        !later.duplicate && later.id > first.id,
        "after the window: stored again"
    );
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
                        store
                            .append(&channel, "chat.message", &data, AppendOptions::default())
                            .await,
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
                appended.push((result.unwrap().id, data));
            }
        }
        assert_eq!(appended.len(), 1600);
        appended.sort();
        let expected: Vec<Entry> = appended
            .iter()
            .map(|(id, d)| entry(*id, "chat.message", d))
            .collect();
        let held = store.history(&good, Range::Latest, 1000).await.unwrap().entries;
        assert_eq!(
            held,
            expected[600..],
            "the newest 1000, each under the id its append returned"
        );
    }

    /// Entries another tool wrote (no fields, no data, data that is not JSON) keep their place
    /// as unreadable: every read goes on past them, so none can stall the channel.
    #[tokio::test]
    async fn foreign_entries_keep_their_place_as_unreadable() {
        let server = RedisServer::start();
        let store = connect(&server, "t:").await;
        let mut conn = raw(&server).await;
        let room = ch("p1");
        let first = store
            .append(&room, "chat.message", "{}", AppendOptions::default())
            .await
            .unwrap()
            .id;
        let mut foreign = Vec::new();
        for fields in [
            &["foo", "bar"][..],
            &["e", "chat.message"],
            &["e", "chat.message", "d", "not json"],
        ] {
            let mut cmd = ::redis::cmd("XADD");
            cmd.arg("t:p1").arg("*").arg(fields);
            let id: String = cmd.query_async(&mut conn).await.unwrap();
            foreign.push(Entry::unreadable(id.parse().unwrap()));
        }
        let last = store
            .append(&room, "chat.message", r#"{"n":1}"#, AppendOptions::default())
            .await
            .unwrap()
            .id;
        let skipped = tidings::store::skipped_entries();
        let mut want = vec![entry(first, "chat.message", "{}")];
        want.extend(foreign.iter().cloned());
        want.push(entry(last, "chat.message", r#"{"n":1}"#));

        assert_eq!(held(&store, &room).await, want);
        let page = store
            .history(&room, Range::After(first), 10)
            .await
            .unwrap()
            .entries;
        assert_eq!(page, want[1..]);
        let r = store
            .replay(&room, pos(&store, &room, StreamId::ZERO).await, 10)
            .await
            .unwrap();
        assert_eq!((r.entries, r.trimmed), (want.clone(), None));
        let r = store
            .replay(&room, pos(&store, &room, first).await, 10)
            .await
            .unwrap();
        assert_eq!((r.entries, r.trimmed), (want[1..].to_vec(), None));
        let start = Position::new(first, store.position(&room).await.unwrap().epoch);
        let batches = store.tail(&[(room.clone(), start)], PROMPT, 10).await.unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].entries, want[1..]);
        assert!(!batches[0].gap);
        assert_eq!(
            store.position(&room).await.unwrap().id,
            last,
            "the position moves past them"
        );
        assert!(
            tidings::store::skipped_entries() >= skipped + 3,
            "each read of one is counted"
        );
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
        assert_eq!(
            store.history(&room, Range::Latest, 10).await.unwrap().entries,
            want
        );
        assert_eq!(
            store
                .replay(&room, Position::from(StreamId::ZERO), 10)
                .await
                .unwrap()
                .entries,
            want
        );
        let batches = store
            .tail(&[(room.clone(), Position::from(StreamId::ZERO))], PROMPT, 10)
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
        assert_eq!(other.position(&room).await.unwrap().id, StreamId::ZERO);
        other
            .append(&room, "chat.message", "{}", AppendOptions::default())
            .await
            .unwrap();
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
        store
            .append(&room, "chat.message", "{}", AppendOptions::default())
            .await
            .unwrap();
        let _: () = ::redis::cmd("PEXPIRE")
            .arg("t:room:1")
            .arg(5000)
            .query_async(&mut conn)
            .await
            .unwrap();
        store
            .append(&room, "chat.message", "{}", AppendOptions::default())
            .await
            .unwrap();
        let pttl: i64 = ::redis::cmd("PTTL")
            .arg("t:room:1")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((90_000..=100_000).contains(&pttl), "PTTL {pttl}");
    }

    #[tokio::test]
    async fn server_gone_gives_transient_errors_with_keyspace_tailing() {
        server_gone_gives_transient_errors(TailMode::Keyspace).await;
    }

    /// The same with XREAD tailing, where a wake is a write to Redis and must fail too.
    #[tokio::test]
    async fn server_gone_gives_transient_errors_with_xread_tailing() {
        server_gone_gives_transient_errors(TailMode::Xread).await;
    }

    async fn server_gone_gives_transient_errors(mode: TailMode) {
        let server = RedisServer::start();
        let store = RedisStore::connect(RedisOptions::new(server.url()).key_prefix("t:").tail_mode(mode))
            .await
            .unwrap();
        assert_eq!(store.tail_mode(), mode);
        let room = ch("room:1");
        let id = store
            .append(&room, "chat.message", "{}", AppendOptions::default())
            .await
            .unwrap()
            .id;
        // Open the tail's own connection while the server is up.
        store.wake().await.unwrap();
        store
            .tail(&[(room.clone(), Position::from(id))], PROMPT, 10)
            .await
            .unwrap();
        drop(server);

        let start = Instant::now();
        let check = |what: &str, r: Result<(), StoreError>| match r {
            Err(e) => assert!(e.is_transient(), "{what}: {e} is not transient"),
            Ok(()) => panic!("{what} succeeded with the server gone"),
        };
        check(
            "append",
            store
                .append(&room, "chat.message", "{}", AppendOptions::default())
                .await
                .map(drop),
        );
        check("history", store.history(&room, Range::Latest, 10).await.map(drop));
        check(
            "replay",
            store.replay(&room, Position::from(id), 10).await.map(drop),
        );
        check("last_id", store.position(&room).await.map(drop));
        check(
            "tail",
            store
                .tail(&[(room.clone(), Position::from(id))], PROMPT, 10)
                .await
                .map(drop),
        );
        check(
            "tail again",
            store
                .tail(&[(room.clone(), Position::from(id))], PROMPT, 10)
                .await
                .map(drop),
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

/// `{"id":…}` as the presence module writes a member.
fn member_info(id: &str, data: &str) -> String {
    format!(r#"{{"id":"{id}","sub":"{id}","name":null,"data":{data}}}"#)
}

/// The events of `channel`'s presence stream, oldest first, with the member id of each.
async fn presence_entries(store: &dyn Store, channel: &Channel) -> Vec<(String, String)> {
    let history = store
        .history(&channel.presence(), Range::Latest, 100)
        .await
        .unwrap();
    history
        .entries
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            (e.event.to_string(), v["id"].as_str().unwrap().to_string())
        })
        .collect()
}

async fn presence_joins_members_once_and_leaves_with_the_last_connection(backend: Backend) {
    use tidings::store::{Joined, PresenceJoin};
    let store = open(&backend, Retention::default()).await;
    let doc = ch("doc:1");
    let until = now_ms() + 60_000;
    let (ada, bob) = (member_info("ada", r#"{"at":1}"#), member_info("bob", "null"));
    let j = |m, c, i| PresenceJoin::new(m, c, i, until);
    assert_eq!(
        store.presence_join(&doc, j("ada", "n:1", &ada)).await.unwrap(),
        Joined::First
    );
    assert_eq!(
        store.presence_join(&doc, j("ada", "n:2", &ada)).await.unwrap(),
        Joined::Again
    );
    // The same connection joining again changes nothing.
    assert_eq!(
        store.presence_join(&doc, j("ada", "n:2", &ada)).await.unwrap(),
        Joined::Again
    );
    assert_eq!(
        store.presence_join(&doc, j("bob", "n:3", &bob)).await.unwrap(),
        Joined::First
    );
    let mut infos = store.presence_members(&doc).await.unwrap();
    infos.sort();
    assert_eq!(infos, [ada.clone(), ada.clone(), bob.clone()]);
    assert!(
        !store.presence_leave(&doc, "n:1").await.unwrap(),
        "ada is still there on n:2"
    );
    assert!(store.presence_leave(&doc, "n:2").await.unwrap());
    assert!(
        !store.presence_leave(&doc, "n:2").await.unwrap(),
        "a second leave is nothing"
    );
    assert!(!store.presence_leave(&doc, "never").await.unwrap());
    assert_eq!(store.presence_members(&doc).await.unwrap(), [bob]);
    let entries = presence_entries(&*store, &doc).await;
    let want = [
        ("presence.join", "ada"),
        ("presence.join", "bob"),
        ("presence.leave", "ada"),
    ];
    let want: Vec<(String, String)> = want.iter().map(|(e, m)| (e.to_string(), m.to_string())).collect();
    assert_eq!(entries, want, "{}", backend.name());
    // The presence stream is a stream like any: it has an epoch, and a tail reads it.
    let pos = store.position(&doc.presence()).await.unwrap();
    assert!(pos.epoch.is_some());
    // The channel's own stream is untouched.
    assert_eq!(store.position(&doc).await.unwrap().id, StreamId::ZERO);
}

async fn presence_sweeps_lapsed_connections_and_refresh_keeps_them(backend: Backend) {
    use tidings::store::PresenceJoin;
    let store = open(&backend, Retention::default()).await;
    let doc = ch("doc:1");
    let now = now_ms();
    let (ada, bob) = (member_info("ada", "null"), member_info("bob", "null"));
    store
        .presence_join(&doc, PresenceJoin::new("ada", "a", &ada, now + 100))
        .await
        .unwrap();
    store
        .presence_join(&doc, PresenceJoin::new("bob", "b", &bob, now + 100))
        .await
        .unwrap();
    // Ada's node refreshes her; Bob's died.
    store
        .presence_refresh(&doc, &["a".to_string()], now + 60_000)
        .await
        .unwrap();
    assert_eq!(
        store.presence_sweep(&doc, now + 50).await.unwrap(),
        0,
        "nothing lapsed yet"
    );
    assert_eq!(store.presence_sweep(&doc, now + 200).await.unwrap(), 1);
    assert_eq!(store.presence_members(&doc).await.unwrap(), [ada]);
    assert_eq!(
        store.presence_sweep(&doc, now + 200).await.unwrap(),
        0,
        "swept once"
    );
    let entries = presence_entries(&*store, &doc).await;
    assert_eq!(
        entries.last().unwrap(),
        &("presence.leave".to_string(), "bob".to_string())
    );
    assert_eq!(entries.len(), 3);
}

async fn presence_refuses_a_new_member_beyond_the_limit(backend: Backend) {
    use tidings::store::{Joined, PresenceJoin};
    let store = open(&backend, Retention::default()).await;
    let doc = ch("doc:1");
    let until = now_ms() + 60_000;
    let infos: Vec<String> = ["a", "b", "c"].iter().map(|m| member_info(m, "null")).collect();
    let join =
        |m: &'static str, c: &'static str, i: usize| PresenceJoin::new(m, c, &infos[i], until).max_members(2);
    assert_eq!(
        store.presence_join(&doc, join("a", "1", 0)).await.unwrap(),
        Joined::First
    );
    assert_eq!(
        store.presence_join(&doc, join("b", "2", 1)).await.unwrap(),
        Joined::First
    );
    assert_eq!(
        store.presence_join(&doc, join("c", "3", 2)).await.unwrap(),
        Joined::Full
    );
    // A member already there may still add a connection.
    assert_eq!(
        store.presence_join(&doc, join("a", "4", 0)).await.unwrap(),
        Joined::Again
    );
    assert_eq!(store.presence_members(&doc).await.unwrap().len(), 3);
    assert_eq!(
        presence_entries(&*store, &doc).await.len(),
        2,
        "the refused join wrote nothing"
    );
}
