//! Limits that need state: open SSE streams per node and per identity, and emits per second per
//! publisher. (The stateless limits, such as payload bytes or channels per connection, are
//! checked where the request is parsed.)

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{NotUntil, Quota, RateLimiter};

use crate::config::Limits;

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionRefused {
    /// The node holds [`Limits::max_connections`] streams: 503.
    Node(usize),
    /// The identity holds [`Limits::max_connections_per_identity`] streams: 429.
    Identity(usize),
}

/// Counts open SSE streams, in all and per identity.
pub(crate) struct Connections {
    max_node: usize,
    max_identity: usize,
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_identity: HashMap<Arc<str>, usize>,
}

/// One open stream: counted until dropped.
pub(crate) struct ConnectionPermit {
    owner: Arc<Connections>,
    identity: Option<Arc<str>>,
}

impl Connections {
    pub fn new(limits: &Limits) -> Arc<Connections> {
        Arc::new(Connections {
            max_node: limits.max_connections,
            max_identity: limits.max_connections_per_identity,
            state: Mutex::new(Counts::default()),
        })
    }

    /// Counts one more stream for `identity` (`None`: anonymous, limited per node only).
    pub fn acquire(self: &Arc<Self>, identity: Option<&str>) -> Result<ConnectionPermit, ConnectionRefused> {
        let mut counts = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_node {
            return Err(ConnectionRefused::Node(self.max_node));
        }
        let identity = match identity {
            None => None,
            Some(sub) => {
                let key: Arc<str> = Arc::from(sub);
                let n = counts.per_identity.entry(key.clone()).or_insert(0);
                if *n >= self.max_identity {
                    return Err(ConnectionRefused::Identity(self.max_identity));
                }
                *n += 1;
                Some(key)
            }
        };
        counts.total += 1;
        Ok(ConnectionPermit {
            owner: self.clone(),
            identity,
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl ConnectionPermit {
    /// Counts this (anonymous) connection for `identity` too, once it is known: a WebSocket
    /// counts against the node from its upgrade, while it authenticates, and against its
    /// identity from then on.
    pub fn identify(mut self, identity: Option<&str>) -> Result<ConnectionPermit, ConnectionRefused> {
        let Some(sub) = identity else { return Ok(self) };
        let mut counts = self.owner.state.lock().unwrap_or_else(|e| e.into_inner());
        let key: Arc<str> = Arc::from(sub);
        let n = counts.per_identity.entry(key.clone()).or_insert(0);
        if *n >= self.owner.max_identity {
            let max = self.owner.max_identity;
            if *n == 0 {
                counts.per_identity.remove(&key);
            }
            // Dropping `self` after the lock is released uncounts the node.
            drop(counts);
            return Err(ConnectionRefused::Identity(max));
        }
        *n += 1;
        drop(counts);
        self.identity = Some(key);
        Ok(self)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.owner.state.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        if let Some(key) = &self.identity {
            if let Some(n) = counts.per_identity.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    counts.per_identity.remove(key);
                }
            }
        }
    }
}

type Keyed = governor::DefaultKeyedRateLimiter<String>;

/// Emits per second per publisher: a GCRA bucket per publisher that allows a burst of one
/// second's worth, then the steady rate.
pub(crate) struct EmitRate {
    per_publisher: Option<(NonZeroU32, Keyed)>,
    emit_key: Option<(NonZeroU32, governor::DefaultDirectRateLimiter)>,
    /// Publishers the keyed limiter may hold before it forgets the idle ones again.
    sweep_at: AtomicUsize,
}

/// The fewest publishers kept before a sweep.
const SWEEP_AT_LEAST: usize = 4096;

type Instant = <DefaultClock as Clock>::Instant;

fn limited(n: NonZeroU32, not_until: NotUntil<Instant>, clock: &DefaultClock) -> RateLimited {
    RateLimited {
        per_second: n.get(),
        retry_after: not_until.wait_time_from(clock.now()),
    }
}

/// An emit refused for its rate: 429.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateLimited {
    /// The limit, in emits per second.
    pub per_second: u32,
    /// When the next emit would be allowed.
    pub retry_after: Duration,
}

impl EmitRate {
    pub fn new(limits: &Limits) -> EmitRate {
        EmitRate {
            per_publisher: limits
                .emits_per_second
                .map(|n| (n, RateLimiter::hashmap(Quota::per_second(n)))),
            emit_key: limits
                .emit_key_emits_per_second
                .map(|n| (n, RateLimiter::direct(Quota::per_second(n)))),
            sweep_at: AtomicUsize::new(SWEEP_AT_LEAST),
        }
    }

    /// Takes one emit for the holder of the emit key.
    pub fn check_emit_key(&self) -> Result<(), RateLimited> {
        let Some((n, limiter)) = &self.emit_key else {
            return Ok(());
        };
        limiter
            .check()
            .map_err(|not_until| limited(*n, not_until, limiter.clock()))
    }

    /// Takes one emit for `publisher` (the `sub` of its identity; `""` for an anonymous one).
    pub fn check(&self, publisher: &str) -> Result<(), RateLimited> {
        let Some((n, limiter)) = &self.per_publisher else {
            return Ok(());
        };
        let result = limiter.check_key(&publisher.to_string());
        // Buckets that have refilled hold no information: forget them once the map has grown to
        // twice what the last sweep left (at least SWEEP_AT_LEAST), so sweeping stays amortised
        // O(1) per emit however many publishers are active.
        if limiter.len() > self.sweep_at.load(Ordering::Relaxed) {
            limiter.retain_recent();
            let left = limiter.len();
            self.sweep_at
                .store((left * 2).max(SWEEP_AT_LEAST), Ordering::Relaxed);
        }
        result.map_err(|not_until| limited(*n, not_until, limiter.clock()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(node: usize, identity: usize) -> Limits {
        Limits {
            max_connections: node,
            max_connections_per_identity: identity,
            ..Limits::default()
        }
    }

    #[test]
    fn counts_per_node_and_per_identity_and_releases_on_drop() {
        let c = Connections::new(&limits(3, 2));
        let a1 = c.acquire(Some("ada")).unwrap();
        let _a2 = c.acquire(Some("ada")).unwrap();
        assert_eq!(c.acquire(Some("ada")).err(), Some(ConnectionRefused::Identity(2)));
        let _anon = c.acquire(None).unwrap();
        assert_eq!(c.acquire(Some("bob")).err(), Some(ConnectionRefused::Node(3)));
        assert_eq!(c.open(), 3);
        drop(a1);
        assert_eq!(c.open(), 2);
        let _a3 = c.acquire(Some("ada")).unwrap();
        assert_eq!(c.state.lock().unwrap().per_identity.len(), 1);
    }

    #[test]
    fn identities_are_forgotten_at_zero() {
        let c = Connections::new(&limits(10, 10));
        let permits: Vec<_> = (0..5)
            .map(|i| c.acquire(Some(&format!("u{i}"))).unwrap())
            .collect();
        assert_eq!(c.state.lock().unwrap().per_identity.len(), 5);
        drop(permits);
        assert_eq!(c.state.lock().unwrap().per_identity.len(), 0);
        assert_eq!(c.open(), 0);
    }

    #[test]
    fn emit_rate_is_per_publisher_and_allows_one_seconds_burst() {
        let rate = EmitRate::new(&Limits {
            emits_per_second: NonZeroU32::new(5),
            ..Limits::default()
        });
        for _ in 0..5 {
            rate.check("ada").unwrap();
        }
        let refused = rate.check("ada").unwrap_err();
        assert_eq!(refused.per_second, 5);
        assert!(refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_millis(200));
        rate.check("bob").unwrap();
        // The emit key is not limited unless configured.
        for _ in 0..100 {
            rate.check_emit_key().unwrap();
        }
    }

    #[test]
    fn idle_publishers_are_forgotten_in_amortised_sweeps() {
        let rate = EmitRate::new(&Limits {
            emits_per_second: NonZeroU32::new(1000),
            ..Limits::default()
        });
        let held = |rate: &EmitRate| rate.per_publisher.as_ref().unwrap().1.len();
        // 15,000 one-off publishers, in rounds far enough apart for earlier buckets to refill.
        for round in 0..3 {
            for i in 0..5000 {
                rate.check(&format!("p{round}-{i}")).unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(held(&rate) <= 10_000, "{} publishers held", held(&rate));
        // The next sweep waits for the map to double what the last one left.
        let sweep_at = rate.sweep_at.load(Ordering::Relaxed);
        assert!(
            sweep_at >= SWEEP_AT_LEAST && sweep_at >= held(&rate),
            "{sweep_at}"
        );
    }

    #[test]
    fn no_limit_when_unset() {
        let rate = EmitRate::new(&Limits {
            emits_per_second: None,
            ..Limits::default()
        });
        for _ in 0..10_000 {
            rate.check("ada").unwrap();
        }
    }
}
