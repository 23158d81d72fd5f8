//! Live tailing from keyspace notifications: Redis tells us which streams got an `XADD`, and we
//! read only those, so idle channels cost nothing however many there are.
//!
//! One pub/sub connection per node `PSUBSCRIBE`s `__keyspace@<db>__:<prefix>*` (needs
//! `notify-keyspace-events` with `K` and `t`; [`enable`] sets it when allowed). Each `xadd`
//! message marks its channel dirty; [`RedisStore::tail`](super::RedisStore) then reads the dirty
//! channels it watches, from their positions, in one pipeline. Pub/sub delivers at most once, so
//! after a reconnect of the subscription, and whenever a tail call waits its full time, every
//! watched channel is read: a lost notification delays an entry, it never loses it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::store::StoreError;

/// What the listener task shares with the tail reader.
pub(super) struct Signals {
    /// Channel names (without the key prefix) that got entries since the last look.
    dirty: Mutex<HashSet<String>>,
    /// Set after (re)subscribing: read every watched channel next time.
    sweep: AtomicBool,
    /// Woken on every change of the two above.
    pub changed: Notify,
}

impl Signals {
    /// Takes the dirty names and whether a full sweep is due.
    pub fn take(&self) -> (HashSet<String>, bool) {
        let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        (dirty, self.sweep.swap(false, Ordering::AcqRel))
    }

    /// Marks a channel to be read again (it had more entries than one read takes).
    pub fn mark(&self, channel: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel.to_string());
        self.changed.notify_one();
    }
}

/// The running listener; stops when dropped.
pub(super) struct Listener {
    pub signals: Arc<Signals>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Makes sure keyspace notifications for stream commands are on.
///
/// # Errors
/// When they are off and `CONFIG SET` is refused (managed Redis services often disable CONFIG).
pub(super) async fn enable(conn: &mut redis::aio::ConnectionManager) -> Result<(), StoreError> {
    let (_, flags): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(conn)
        .await?;
    let has = |c: char| flags.contains(c);
    if has('K') && (has('t') || has('A')) {
        return Ok(());
    }
    let mut wanted = flags.clone();
    for c in ['K', 't'] {
        if !wanted.contains(c) {
            wanted.push(c);
        }
    }
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&wanted)
        .query_async::<()>(conn)
        .await?;
    tracing::info!(from = %flags, to = %wanted, "enabled Redis keyspace notifications for streams");
    Ok(())
}

/// Escapes glob characters so the key prefix matches literally in `PSUBSCRIBE`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Subscribes (returning an error if that fails now) and keeps the subscription up in a task.
pub(super) async fn listen(client: redis::Client, db: i64, prefix: &str) -> Result<Listener, StoreError> {
    let head = format!("__keyspace@{db}__:{prefix}");
    let pattern = format!("{}*", glob_escape(&head));
    let signals = Arc::new(Signals {
        dirty: Mutex::new(HashSet::new()),
        sweep: AtomicBool::new(true),
        changed: Notify::new(),
    });
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.psubscribe(&pattern).await?;
    let task = tokio::spawn(run(client, pattern, head, pubsub, Arc::downgrade(&signals)));
    Ok(Listener { signals, task })
}

async fn run(
    client: redis::Client,
    pattern: String,
    head: String,
    first: redis::aio::PubSub,
    signals: Weak<Signals>,
) {
    let mut pubsub = Some(first);
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut current = match pubsub.take() {
            Some(p) => p,
            None => match subscribe(&client, &pattern).await {
                Ok(p) => {
                    backoff = Duration::from_millis(50);
                    // Notifications sent while we were away are lost: read everything once.
                    let Some(s) = signals.upgrade() else { return };
                    s.sweep.store(true, Ordering::Release);
                    s.changed.notify_one();
                    p
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "keyspace subscription failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let mut messages = current.on_message();
        while let Some(msg) = messages.next().await {
            let Some(s) = signals.upgrade() else { return };
            if msg.get_payload_bytes() != b"xadd" {
                continue;
            }
            if let Some(name) = msg.get_channel_name().strip_prefix(&head) {
                s.dirty
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.to_string());
                s.changed.notify_one();
            }
        }
        tracing::warn!("keyspace subscription ended; resubscribing");
    }
}

async fn subscribe(client: &redis::Client, pattern: &str) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.psubscribe(pattern).await?;
    Ok(pubsub)
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn escapes_glob_characters() {
        assert_eq!(glob_escape("tidings:"), "tidings:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
