//! Live tailing from keyspace notifications: Redis tells us which streams got an `XADD`, and we
//! read only those, so idle channels cost nothing however many there are.
//!
//! One pub/sub connection per node `PSUBSCRIBE`s `__keyspace@<db>__:<prefix>*` (needs
//! `notify-keyspace-events` with `K` and `t`; [`enable`] sets it when allowed). Each `xadd`
//! message marks its channel dirty; [`RedisStore::tail`](super::RedisStore) then reads the dirty
//! channels it watches, from their positions, in one pipeline. Pub/sub delivers at most once, so
//! after a reconnect of the subscription, and whenever a tail call waits its full time, every
//! watched channel is read: a lost notification delays an entry, it never loses it.
//!
//! On a Redis Cluster notifications are node-local: a master only announces writes to the keys it
//! owns. [`listen_cluster`] therefore holds one subscription per master (found with
//! `CLUSTER SLOTS`, notifications enabled on each), all feeding the same [`Signals`]. A supervisor
//! task looks at the masters again every [`REDISCOVER_EVERY`] and at once when a subscription
//! drops: it subscribes to new masters (enabling notifications there first: `CONFIG SET` is not
//! replicated, so a promoted replica may not have them) and ends the subscriptions of nodes that
//! no longer own slots. Every (re)subscription triggers the same full read as on a single node.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo};
use tokio::sync::Notify;

use super::cluster;
use crate::store::StoreError;

/// How often a cluster node looks for masters it does not subscribe to yet. A planned failover
/// drops no subscription (the old master stays up as a replica), so this bounds how late live
/// events from a promoted replica can be (never lost: the resubscription reads every channel).
/// One `CLUSTER SLOTS` a second per node is nothing to Redis.
pub(super) const REDISCOVER_EVERY: Duration = Duration::from_secs(1);

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
pub(super) async fn enable(conn: &mut impl ConnectionLike) -> Result<(), StoreError> {
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
pub(super) async fn listen(
    client: redis::Client,
    db: i64,
    prefix: &str,
    timeout: Duration,
) -> Result<Listener, StoreError> {
    let head = format!("__keyspace@{db}__:{prefix}");
    let pattern = format!("{}*", glob_escape(&head));
    let signals = Arc::new(Signals {
        dirty: Mutex::new(HashSet::new()),
        sweep: AtomicBool::new(true),
        changed: Notify::new(),
    });
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.psubscribe(&pattern).await?;
    // A Redis restarted without its config file forgets `notify-keyspace-events`: enable them
    // again before each resubscription, as on a cluster node. No supervisor listens for `lost`.
    let duty = NodeDuty {
        lost: Arc::new(Notify::new()),
        timeout,
    };
    let task = tokio::spawn(run(
        client,
        pattern,
        head,
        Some(pubsub),
        Arc::downgrade(&signals),
        Some(duty),
    ));
    Ok(Listener { signals, task })
}

/// What a cluster node's subscription task needs beyond a single node's.
#[derive(Clone)]
struct NodeDuty {
    /// Told when the subscription drops, so the supervisor looks at the topology at once.
    lost: Arc<Notify>,
    /// Timeout of the short-lived connection that enables notifications.
    timeout: Duration,
}

/// Aborts a node's subscription task when the supervisor lets go of it (or is itself dropped).
struct NodeTask(tokio::task::JoinHandle<()>);

impl Drop for NodeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Enables notifications on one node over a short-lived connection of its own (the cluster
/// connection routes by key, and a subscribed connection cannot run `CONFIG`).
async fn enable_on(client: &redis::Client, timeout: Duration) -> Result<(), StoreError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    enable(&mut conn).await
}

/// Subscribes to keyspace notifications on every master of a cluster (returning an error if that
/// fails now, or if notifications cannot be enabled on a master) and keeps the subscriptions in
/// line with the cluster's masters in a task.
pub(super) async fn listen_cluster(
    mut conn: ClusterConnection,
    template: ConnectionInfo,
    prefix: &str,
    timeout: Duration,
) -> Result<(Listener, usize), StoreError> {
    // A cluster has database 0 only.
    let head = format!("__keyspace@0__:{prefix}");
    let pattern = format!("{}*", glob_escape(&head));
    let signals = Arc::new(Signals {
        dirty: Mutex::new(HashSet::new()),
        sweep: AtomicBool::new(true),
        changed: Notify::new(),
    });
    let duty = NodeDuty {
        lost: Arc::new(Notify::new()),
        timeout,
    };
    let mut nodes = HashMap::new();
    for master in cluster::masters(&mut conn, &template).await? {
        let client = redis::Client::open(master.info)?;
        enable_on(&client, timeout).await.map_err(|e| {
            cluster::config_error(
                "keyspace notifications are needed on every master of a Redis Cluster (notify-keyspace-events Kt; XREAD tailing is not available there), and could not be enabled",
                format!("on {}: {e}", master.addr),
            )
        })?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(&pattern).await?;
        let task = tokio::spawn(run(
            client,
            pattern.clone(),
            head.clone(),
            Some(pubsub),
            Arc::downgrade(&signals),
            Some(duty.clone()),
        ));
        nodes.insert(master.addr, NodeTask(task));
    }
    let count = nodes.len();
    let task = tokio::spawn(supervise(
        conn,
        template,
        pattern,
        head,
        Arc::downgrade(&signals),
        nodes,
        duty,
    ));
    Ok((Listener { signals, task }, count))
}

/// Keeps one subscription per master: looks at the masters every [`REDISCOVER_EVERY`], and soon
/// after a subscription dropped.
async fn supervise(
    mut conn: ClusterConnection,
    template: ConnectionInfo,
    pattern: String,
    head: String,
    signals: Weak<Signals>,
    mut nodes: HashMap<String, NodeTask>,
    duty: NodeDuty,
) {
    loop {
        tokio::select! {
            _ = duty.lost.notified() => {
                // Let a failover settle a little; the periodic look catches what this one misses.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ = tokio::time::sleep(REDISCOVER_EVERY) => {}
        }
        if signals.strong_count() == 0 {
            return;
        }
        let masters = match cluster::masters(&mut conn, &template).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the Redis Cluster's masters");
                continue;
            }
        };
        nodes.retain(|addr, _| {
            let keep = masters.iter().any(|m| &m.addr == addr);
            if !keep {
                tracing::info!(node = %addr, "no longer a master: keyspace subscription ended");
            }
            keep
        });
        for master in masters {
            if nodes.contains_key(&master.addr) {
                continue;
            }
            let client = match redis::Client::open(master.info) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(node = %master.addr, error = %e, "cannot reach a new master");
                    continue;
                }
            };
            tracing::info!(node = %master.addr, "new master: subscribing to its keyspace notifications");
            let task = tokio::spawn(run(
                client,
                pattern.clone(),
                head.clone(),
                None,
                signals.clone(),
                Some(duty.clone()),
            ));
            nodes.insert(master.addr, NodeTask(task));
        }
    }
}

/// Holds one subscription (a single server's, or one cluster master's) and resubscribes when it
/// drops. With `node`, notifications are enabled again before each subscription and `lost` is
/// told when it drops.
async fn run(
    client: redis::Client,
    pattern: String,
    head: String,
    first: Option<redis::aio::PubSub>,
    signals: Weak<Signals>,
    node: Option<NodeDuty>,
) {
    let mut pubsub = first;
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut current = match pubsub.take() {
            Some(p) => p,
            None => match subscribe(&client, &pattern, node.as_ref()).await {
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
        if let Some(duty) = &node {
            duty.lost.notify_one();
        }
    }
}

async fn subscribe(
    client: &redis::Client,
    pattern: &str,
    node: Option<&NodeDuty>,
) -> Result<redis::aio::PubSub, StoreError> {
    if let Some(duty) = node {
        if let Err(e) = enable_on(client, duty.timeout).await {
            // Subscribe anyway: they may be on already, and the periodic full read covers the rest.
            tracing::warn!(error = %e, "could not enable keyspace notifications again");
        }
    }
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
