//! [`Tidings`]: the handle an application holds: schema, store and hub together.

use std::sync::Arc;

use serde_json::Value;

use crate::channel::{Channel, ChannelError};
use crate::config::Config;
use crate::envelope::Envelope;
use crate::hub::Hub;
use crate::id::StreamId;
use crate::limits::{Connections, EmitRate};
use crate::payload::Emittable;
use crate::schema::{Registry, RegistryError, ValidateError};
use crate::store::{MemoryStore, Range, RedisOptions, RedisStore, Store, StoreError};

/// A running tidings instance: emit from Rust, or serve it over HTTP with
/// [`router`](crate::router).
///
/// Cheap to clone; clones share everything.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tidings::{Config, Tidings};
/// use tidings::events::ChatMessage;
///
/// let rt = Tidings::from_config(Config::default()).await?;
/// let id = rt
///     .channel("room:1")
///     .emit(ChatMessage { text: "hello".parse()?, user: "ada".parse()?, reply_to: None, mentions: vec![] })
///     .await?;
/// println!("stored as {id}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Tidings {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub registry: Registry,
    pub store: Arc<dyn Store>,
    pub hub: Hub,
    pub config: Config,
    pub emit_key: String,
    /// Flipped to true by [`Tidings::close`]; open SSE streams end when it does.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Open SSE streams, in all and per identity.
    pub connections: Arc<Connections>,
    /// Emits per second per publisher.
    pub emit_rate: EmitRate,
}

/// Why [`Tidings::from_config`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The schema file is missing or wrong.
    #[error(transparent)]
    Schema(#[from] RegistryError),
    /// The store could not be reached.
    #[error("cannot connect to the store: {0}")]
    Store(#[from] StoreError),
    /// The limits cannot work together.
    #[error(transparent)]
    Limits(#[from] crate::config::LimitsError),
}

/// Why an emit was refused or failed. Nothing is stored when this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The channel name is not allowed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// Unknown event, or the payload does not match its schema.
    #[error(transparent)]
    Invalid(#[from] ValidateError),
    /// The payload is larger than [`Limits::max_payload_bytes`](crate::Limits).
    #[error("payload is {size} bytes; at most {max} are allowed")]
    TooLarge {
        /// Its size in bytes (as compact JSON).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The payload could not be serialized.
    #[error("payload cannot be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The store failed; the emit may be retried.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Tidings {
    /// Loads the schema and connects the store the config names (Redis when `redis_url` is
    /// set, the embedded store otherwise). Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`StartError`] when the limits are inconsistent, the schema is invalid or Redis cannot be
    /// reached.
    pub async fn from_config(config: Config) -> Result<Tidings, StartError> {
        config.limits.check()?;
        let registry = Registry::load(&config.schema)?;
        let store: Arc<dyn Store> = match &config.redis_url {
            Some(url) => Arc::new(
                RedisStore::connect(
                    RedisOptions::new(url.clone())
                        .key_prefix(config.key_prefix.clone())
                        .retention(config.retention.clone())
                        .timeout(config.redis_timeout)
                        .tail_mode(config.redis_tail),
                )
                .await?,
            ),
            None => Arc::new(MemoryStore::new(config.retention.clone())),
        };
        Ok(Tidings::new(registry, store, config))
    }

    /// Assembles an instance from parts. Starts the hub's reader task, so it must be called
    /// inside a Tokio runtime.
    ///
    /// # Panics
    /// Outside a Tokio runtime, or when [`Limits::check`](crate::Limits::check) fails
    /// ([`Tidings::from_config`] returns that as an error instead).
    pub fn new(registry: Registry, store: Arc<dyn Store>, config: Config) -> Tidings {
        if let Err(e) = config.limits.check() {
            panic!("{e}");
        }
        // A subscriber kicked for lagging is at most `queue` entries behind on a channel; it
        // resumes losslessly only if history still reaches that far back.
        let queue = config
            .limits
            .subscriber_queue
            .min((config.retention.max_len / 2).max(1));
        let hub = Hub::start(store.clone(), queue);
        let emit_key = config.emit_key.clone().unwrap_or_else(random_key);
        Tidings {
            inner: Arc::new(Inner {
                registry,
                store,
                hub,
                emit_key,
                closing: tokio::sync::watch::Sender::new(false),
                connections: Connections::new(&config.limits),
                emit_rate: EmitRate::new(&config.limits),
                config,
            }),
        }
    }

    /// Ends every open SSE stream (clients reconnect, to this node or another, and resume from
    /// their cursors) and refuses new ones. [`serve`](crate::serve) calls this when its shutdown
    /// future completes; call it yourself before a graceful shutdown of your own server, which
    /// otherwise waits for streams that never end.
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    /// True once [`Tidings::close`] was called.
    pub fn is_closed(&self) -> bool {
        *self.inner.closing.borrow()
    }

    /// The bearer key `POST /emit` accepts (generated when the config gave none).
    pub fn emit_key(&self) -> &str {
        &self.inner.emit_key
    }

    /// The schema in use.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The store in use.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A handle to emit to or read `name`. The name is checked (against
    /// [`Limits::max_channel_len`](crate::Limits)) when the handle is used.
    pub fn channel(&self, name: &str) -> ChannelHandle {
        ChannelHandle {
            rt: self.clone(),
            name: self.parse_channel(name),
        }
    }

    /// Checks a channel name against the configured length limit.
    pub(crate) fn parse_channel(&self, name: &str) -> Result<Channel, ChannelError> {
        Channel::with_max_len(name, self.inner.config.limits.max_channel_len)
    }

    /// Validates and stores an event given as JSON: the path `POST /emit` takes.
    ///
    /// # Errors
    /// [`EmitError`]; nothing is stored unless this returns `Ok`.
    pub async fn emit_json(
        &self,
        channel: &Channel,
        event: &str,
        data: &Value,
    ) -> Result<StreamId, EmitError> {
        self.inner.registry.validate(event, data)?;
        let text = serde_json::to_string(data)?;
        let max = self.inner.config.limits.max_payload_bytes;
        if text.len() > max {
            return Err(EmitError::TooLarge {
                size: text.len(),
                max,
            });
        }
        Ok(self.inner.store.append(channel, event, &text).await?)
    }
}

fn random_key() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One channel of a [`Tidings`] instance.
#[derive(Clone)]
pub struct ChannelHandle {
    rt: Tidings,
    name: Result<Channel, ChannelError>,
}

impl ChannelHandle {
    fn channel(&self) -> Result<&Channel, ChannelError> {
        self.name.as_ref().map_err(Clone::clone)
    }

    /// Emits a typed event: validated against the schema, then stored and fanned out.
    ///
    /// # Errors
    /// [`EmitError`]; nothing is stored unless this returns `Ok`.
    pub async fn emit<E: Emittable>(&self, event: E) -> Result<StreamId, EmitError> {
        let channel = self.channel()?;
        let data = serde_json::to_value(&event)?;
        self.rt.emit_json(channel, event.event_name(), &data).await
    }

    /// Reads stored events, oldest first: the newest `limit` ones, or a page after or before an
    /// id. `limit` is capped to [`Limits::max_history`](crate::Limits).
    ///
    /// # Errors
    /// [`EmitError::Channel`] for a bad name, [`EmitError::Store`] when the store fails.
    pub async fn history(&self, range: Range, limit: usize) -> Result<Vec<Envelope>, EmitError> {
        let channel = self.channel()?;
        let limit = limit.min(self.rt.inner.config.limits.max_history);
        let entries = self.rt.inner.store.history(channel, range, limit).await?;
        Ok(entries.iter().map(|e| Envelope::from_entry(channel, e)).collect())
    }
}
