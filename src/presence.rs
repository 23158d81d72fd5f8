//! Presence: who is on a channel, for the channels `--presence` patterns name.
//!
//! A connection that joins a channel's presence becomes one of its members (one member per
//! identity: a user with two tabs is one member with two connections). The store keeps the
//! connections with a lapse time and writes a `presence.join` entry when a member arrives and a
//! `presence.leave` entry when its last connection goes, into the channel's presence stream
//! ([`Channel::presence`]). Subscribers tail that stream through the hub like any channel, so
//! joins and leaves reach every node's subscribers in order, on the memory store, one Redis or
//! a Redis Cluster alike.
//!
//! Each node refreshes the lapse of its own connections every quarter of `--presence-ttl`, and
//! sweeps the channels its subscribers watch: the connections of a node that died (kill -9,
//! a lost host) lapse and are removed, with their `presence.leave`, within `--presence-ttl`
//! and a quarter.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use crate::auth::{pattern_matches, Identity};
use crate::channel::Channel;
use crate::store::{Joined, PresenceJoin, Store, StoreError};

/// One member of a channel's presence.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Member {
    /// The member: its identity's `sub`, or `anon:<connection>` for an anonymous connection.
    pub id: String,
    /// The identity's subject, when it has one.
    pub sub: Option<String>,
    /// A display name (the JWT `name` claim).
    pub name: Option<String>,
    /// What the member said about itself when it joined (`null` when nothing).
    pub data: Value,
    /// Its connections on the channel (two tabs: 2).
    pub connections: usize,
}

/// Who is on a channel ([`Tidings::presence`](crate::Tidings::presence), `GET /presence`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PresenceSnapshot {
    /// The channel.
    pub channel: Channel,
    /// The members, by id, at most [`Limits::max_presence_members`](crate::Limits).
    pub members: Vec<Member>,
    /// How many members there are in all.
    pub count: usize,
}

/// Why a join was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The channel matches no `--presence` pattern.
    #[error("channel {channel:?} has no presence; {patterns}")]
    Disabled {
        /// The channel.
        channel: String,
        /// Which channels do.
        patterns: String,
    },
    /// The data is larger than allowed.
    #[error("presence data is {size} bytes; at most {max} are allowed (max_presence_data_bytes)")]
    TooLarge {
        /// Its size, as JSON.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The channel holds its limit of members.
    #[error("channel {channel:?} has its limit of {max} present members (max_presence_members)")]
    Full {
        /// The channel.
        channel: String,
        /// The limit.
        max: usize,
    },
    /// The data does not match the schema's `presence` entry for the channel.
    #[error("presence data {0}")]
    Invalid(crate::schema::ValidateError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PresenceError {
    /// `channel` has none of the `patterns`' presence.
    pub(crate) fn disabled(channel: &Channel, patterns: &[String]) -> PresenceError {
        PresenceError::Disabled {
            channel: channel.to_string(),
            patterns: if patterns.is_empty() {
                "no channel has presence on this server (start it with --presence <pattern>, such as --presence 'doc:*')".into()
            } else {
                format!("channels matching {} do (--presence)", patterns.join(", "))
            },
        }
    }
}

/// The presence of one node.
#[derive(Clone)]
pub(crate) struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    patterns: Vec<String>,
    /// The schema's `presence` data schemas.
    schemas: crate::schema::PresenceSchemas,
    ttl: Duration,
    max_members: usize,
    max_data_bytes: usize,
    /// This node's connections present, per channel: refreshed while they live.
    local: Mutex<HashMap<Channel, HashSet<String>>>,
    /// Channels this node's subscribers watch the presence of, with how many: swept.
    watched: Mutex<HashMap<Channel, usize>>,
    /// Names this node's connections apart from other nodes'.
    node: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Presence {
    /// Presence for the channels `patterns` match; starts the refresh-and-sweep task.
    pub fn start(
        store: Arc<dyn Store>,
        schemas: crate::schema::PresenceSchemas,
        patterns: Vec<String>,
        ttl: Duration,
        max_members: usize,
        max_data_bytes: usize,
    ) -> Presence {
        let inner = Arc::new(Inner {
            store,
            schemas,
            patterns,
            ttl: ttl.max(Duration::from_millis(400)),
            max_members,
            max_data_bytes,
            local: Mutex::new(HashMap::new()),
            watched: Mutex::new(HashMap::new()),
            node: format!("{:08x}", rand::random::<u32>()),
        });
        if !inner.patterns.is_empty() {
            tokio::spawn(upkeep(Arc::downgrade(&inner)));
        }
        Presence { inner }
    }

    /// True when `channel` has presence.
    pub fn enabled(&self, channel: &Channel) -> bool {
        self.inner
            .patterns
            .iter()
            .any(|p| pattern_matches(p, None, channel.as_str()))
    }

    /// A connection key unique across nodes.
    pub fn conn_key(&self, connection: &str) -> String {
        format!("{}:{connection}", self.inner.node)
    }

    /// Joins connection `conn` (from [`Presence::conn_key`]) of `identity` to `channel`'s
    /// presence, with `data`.
    pub async fn join(
        &self,
        channel: &Channel,
        identity: &Identity,
        conn: &str,
        data: Option<&Value>,
    ) -> Result<Joined, PresenceError> {
        let inner = &self.inner;
        if !self.enabled(channel) {
            return Err(PresenceError::disabled(channel, &inner.patterns));
        }
        let data = data.cloned().unwrap_or(Value::Null);
        let size = data.to_string().len();
        if size > inner.max_data_bytes {
            return Err(PresenceError::TooLarge {
                size,
                max: inner.max_data_bytes,
            });
        }
        if !data.is_null() {
            inner
                .schemas
                .check(channel.as_str(), &data)
                .map_err(PresenceError::Invalid)?;
        }
        let id = match &identity.sub {
            Some(sub) => sub.clone(),
            None => format!("anon:{conn}"),
        };
        let info = serde_json::json!({
            "id": id,
            "sub": identity.sub,
            "name": identity.name,
            "data": data,
        })
        .to_string();
        let until = now_ms() + inner.ttl.as_millis() as u64;
        let join = PresenceJoin::new(&id, conn, &info, until).max_members(inner.max_members);
        // Counted before the store call: a connection that goes while the call is out still
        // leaves (and the refresh keeps it meanwhile).
        lock(&inner.local)
            .entry(channel.clone())
            .or_default()
            .insert(conn.to_string());
        let joined = inner.store.presence_join(channel, join).await;
        if !matches!(joined, Ok(Joined::First | Joined::Again)) {
            self.forget(channel, conn);
        }
        match joined? {
            Joined::Full => Err(PresenceError::Full {
                channel: channel.to_string(),
                max: inner.max_members,
            }),
            joined => Ok(joined),
        }
    }

    fn forget(&self, channel: &Channel, conn: &str) {
        let mut local = lock(&self.inner.local);
        if let Some(set) = local.get_mut(channel) {
            set.remove(conn);
            if set.is_empty() {
                local.remove(channel);
            }
        }
    }

    /// Takes connection `conn` off `channel`'s presence.
    pub async fn leave(&self, channel: &Channel, conn: &str) -> Result<bool, StoreError> {
        self.forget(channel, conn);
        self.inner.store.presence_leave(channel, conn).await
    }

    /// Who is on `channel` now (lapsed connections swept first).
    pub async fn snapshot(&self, channel: &Channel) -> Result<PresenceSnapshot, StoreError> {
        let store = &self.inner.store;
        store.presence_sweep(channel, now_ms()).await?;
        let infos = store.presence_members(channel).await?;
        let mut by_id: std::collections::BTreeMap<String, Member> = std::collections::BTreeMap::new();
        for info in infos {
            let Ok(v) = serde_json::from_str::<Value>(&info) else {
                continue;
            };
            let Some(id) = v["id"].as_str() else { continue };
            by_id
                .entry(id.to_string())
                .and_modify(|m| m.connections += 1)
                .or_insert_with(|| Member {
                    id: id.to_string(),
                    sub: v["sub"].as_str().map(str::to_string),
                    name: v["name"].as_str().map(str::to_string),
                    data: v["data"].clone(),
                    connections: 1,
                });
        }
        let count = by_id.len();
        Ok(PresenceSnapshot {
            channel: channel.clone(),
            members: by_id.into_values().take(self.inner.max_members).collect(),
            count,
        })
    }

    /// Counts a local subscriber of `channel`'s presence (it is swept while watched).
    pub fn watch(&self, channel: &Channel) {
        *lock(&self.inner.watched).entry(channel.clone()).or_default() += 1;
    }

    /// Undoes one [`Presence::watch`].
    pub fn unwatch(&self, channel: &Channel) {
        let mut watched = lock(&self.inner.watched);
        if let Some(n) = watched.get_mut(channel) {
            *n -= 1;
            if *n == 0 {
                watched.remove(channel);
            }
        }
    }
}

/// Refreshes this node's connections and sweeps watched channels, every quarter of the ttl.
async fn upkeep(presence: Weak<Inner>) {
    let every = presence.upgrade().map_or(Duration::from_secs(5), |p| p.ttl / 4);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = presence.upgrade() else { return };
        let until = now_ms() + inner.ttl.as_millis() as u64;
        let local: Vec<(Channel, Vec<String>)> = lock(&inner.local)
            .iter()
            .map(|(c, conns)| (c.clone(), conns.iter().cloned().collect()))
            .collect();
        for (channel, conns) in &local {
            if let Err(e) = inner.store.presence_refresh(channel, conns, until).await {
                tracing::warn!(error = %e, %channel, "could not refresh presence; members may lapse");
            }
        }
        let watched: Vec<Channel> = lock(&inner.watched).keys().cloned().collect();
        let now = now_ms();
        for channel in &watched {
            match inner.store.presence_sweep(channel, now).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(%channel, members = n, "presence: lapsed members removed"),
                Err(e) => tracing::warn!(error = %e, %channel, "could not sweep presence"),
            }
        }
    }
}
