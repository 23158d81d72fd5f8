//! The WebSocket transport: `GET /ws`, JSON text messages both ways, on the same session (and
//! the same cursors) as SSE.
//!
//! ```text
//! client                                          server
//!                                                 {"type":"welcome","connection":"…","sub":"ada",…}
//! {"type":"subscribe","ref":1,"channels":["room:1"],"cursor":"room:1=…"}
//!                                                 {"type":"subscribed","ref":1,"channels":["room:1"]}
//!                                                 {"type":"event","cursor":"room:1=…","id":"…",…}   missed ones
//!                                                 {"type":"ready","ref":1,"cursor":"…",…}          live from here
//! {"type":"emit","ref":2,"channel":"room:1","event":"chat.message","data":{…}}
//!                                                 {"type":"emitted","ref":2,"id":"…","duplicate":false}
//! {"type":"unsubscribe","ref":3,"channels":["room:1"]}
//!                                                 {"type":"unsubscribed","ref":3,"channels":[…],"cursor":"…"}
//! {"type":"ping","ref":4}                          {"type":"pong","ref":4}
//! ```
//!
//! A refused request gets `{"type":"error","ref":…,"status":400,"error":"…","message":"…"}`,
//! the body HTTP would answer with. Close codes: 1001 server shutting down,
//! 1009 message too large, 1011 internal error, 1013 node full / too many connections, 4001
//! unauthenticated, 4002 lagged (resume with the cursor of the `lagged` frame), 4003 forbidden,
//! 4004 token expired (after `expired`), 4008 too many messages, 4009 no answer to heartbeats.

use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::{authorize_read, AuthError, AuthRequest, Identity};
use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::frame::{Frame, Ref};
use crate::http::{check_channels, check_events, constant_time_eq, publish, ApiError};
use crate::hub::Subscription;
use crate::realtime::Tidings;
use crate::session::{closed, until, Gone, ReplayError, Session, Transport};

/// Close codes of our own (4000–4999 are the application's), documented in the README.
mod code {
    pub const UNAUTHENTICATED: u16 = 4001;
    pub const LAGGED: u16 = 4002;
    pub const FORBIDDEN: u16 = 4003;
    pub const EXPIRED: u16 = 4004;
    pub const TOO_MANY_MESSAGES: u16 = 4008;
    pub const NO_HEARTBEAT: u16 = 4009;
}

/// The longest `ref` a client may attach to a request, as JSON text.
const MAX_REF_LEN: usize = 128;

/// `GET /ws`: checks what can be checked over HTTP (the query, the origin, whether this node
/// takes connections), then upgrades; authentication and everything after is in messages.
pub(crate) async fn upgrade(
    State(rt): State<Tidings>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    match prepare(&rt, &headers, raw.as_deref()) {
        Ok(()) => {}
        Err(e) => return e.into_response(),
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "not_websocket",
                format!(
                    "{}; GET /ws is a WebSocket endpoint (for Server-Sent Events use GET /realtime)",
                    rejection.body_text()
                ),
            )
            .into_response()
        }
    };
    let max = rt.inner.config.limits.max_ws_message_bytes();
    let mut auth = AuthRequest::new(headers, raw);
    // A token given on the URL is as explicit as a header: an authorizer sees it as a bearer
    // token, so it may also publish. A cookie alone may not (another site's page can open a
    // WebSocket that carries it).
    if auth.bearer().is_none() {
        if let Some(token) = auth.query_param("token") {
            set_bearer(&mut auth, &token);
        }
    }
    ws.max_message_size(max)
        .max_frame_size(max)
        // An idle connection should hold little: tungstenite's buffers grow when needed.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move { connection(rt, auth, socket).await })
}

fn prepare(rt: &Tidings, headers: &HeaderMap, raw: Option<&str>) -> Result<(), ApiError> {
    let query: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some((k, _)) = query.iter().find(|(k, _)| k != "token") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!(
                "unknown parameter {:?}; GET /ws takes only token (channels are subscribed with messages)",
                k.chars().take(64).collect::<String>()
            ),
        ));
    }
    // Browsers send any page's cookies with a WebSocket handshake and apply no CORS to it: the
    // origin is checked here. Same host, or a listed origin; clients that are not browsers send
    // no Origin.
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !origin_allowed(rt, headers, origin) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!(
                    "origin {:?} may not open a WebSocket here; pages of this host, or origins listed with --cors-origin, may",
                    origin.to_str().unwrap_or("?")
                ),
            ));
        }
    }
    if rt.is_closed() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this node is shutting down; reconnect (to another node) with your cursor",
        ));
    }
    let limits = &rt.inner.config.limits;
    if rt.inner.connections.open() >= limits.max_connections {
        return Err(crate::limits::ConnectionRefused::Node(limits.max_connections).into());
    }
    Ok(())
}

fn origin_allowed(rt: &Tidings, headers: &HeaderMap, origin: &HeaderValue) -> bool {
    if crate::http::cors_allowed(rt, Some(origin)).is_some() {
        return true;
    }
    let (Ok(origin), Some(host)) = (origin.to_str(), headers.get(header::HOST)) else {
        return false;
    };
    let host = host.to_str().unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest.eq_ignore_ascii_case(host))
}

fn set_bearer(auth: &mut AuthRequest, token: &str) {
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        auth.headers.insert(header::AUTHORIZATION, value);
    }
}

/// The WebSocket transport: one text message per frame.
struct WsOut {
    sink: SplitSink<WebSocket, Message>,
    queue: Vec<String>,
    bytes: usize,
    write_timeout: Duration,
}

impl Transport for WsOut {
    fn push(&mut self, frame: Frame<'_>) {
        let mut text = String::new();
        frame.write_ws(&mut text);
        if !text.is_empty() {
            self.bytes += text.len();
            self.queue.push(text);
        }
    }

    fn pending(&self) -> usize {
        self.bytes
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        if self.queue.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        let queue = std::mem::take(&mut self.queue);
        let sink = &mut self.sink;
        let write = async move {
            for text in queue {
                sink.feed(Message::Text(text.into())).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                tracing::debug!(timeout = ?self.write_timeout, "a WebSocket write made no progress; closing");
                Err(Gone)
            }
        }
    }
}

impl WsOut {
    /// Writes what is pending, then a close frame.
    async fn close(&mut self, code: u16, reason: &str) {
        if self.flush().await.is_err() {
            return;
        }
        // A close reason has at most 123 bytes; the full message went in an `error` frame.
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = CloseFrame {
            code,
            reason: reason[..end].into(),
        };
        let _ = tokio::time::timeout(self.write_timeout, self.sink.send(Message::Close(Some(frame)))).await;
    }
}

/// How a connection ends.
struct Close {
    code: u16,
    reason: String,
}

impl Close {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Close {
            code,
            reason: reason.into(),
        }
    }
}

/// What a message asked for is done (`Ok`), or the connection ends (`Err`; `None`: the client
/// is gone and nothing more can be said).
type Step = Result<(), Option<Close>>;

struct Conn {
    rt: Tidings,
    auth: AuthRequest,
    identity: Identity,
    /// This connection's id, as `welcome` gave it.
    connection: String,
    /// Subscribes with a filter of the client's, so far.
    filters: usize,
    deadline: Option<tokio::time::Instant>,
    sub: Subscription,
    s: Session<WsOut>,
    /// Messages per second.
    limiter: governor::DefaultDirectRateLimiter,
    /// Messages refused in a row for the rate.
    refused: u32,
    /// When the client was last heard from (any frame, a pong included).
    heard: tokio::time::Instant,
}

async fn connection(rt: Tidings, mut auth: AuthRequest, socket: WebSocket) {
    let config = &rt.inner.config;
    let (sink, mut stream) = socket.split();
    let mut out = WsOut {
        sink,
        queue: Vec::new(),
        bytes: 0,
        write_timeout: config.write_timeout,
    };
    // Counted against the node from here, while it authenticates (an unauthenticated socket
    // waiting for its `auth` message holds a slot too), and against its identity once known.
    let waiting = match rt.inner.connections.acquire(None) {
        Ok(permit) => permit,
        Err(refused) => {
            let e: ApiError = refused.into();
            push_error(&mut out, None, &e);
            out.close(close_code::AGAIN, e.message()).await;
            return linger(stream).await;
        }
    };
    let identity = match authenticate(&rt, &mut auth, &mut stream).await {
        Ok(identity) => identity,
        Err((code, e)) => {
            push_error(&mut out, None, &e);
            out.close(code, e.message()).await;
            return linger(stream).await;
        }
    };
    let permit = match waiting.identify(identity.sub.as_deref()) {
        Ok(permit) => permit,
        Err(refused) => {
            let e: ApiError = refused.into();
            push_error(&mut out, None, &e);
            out.close(close_code::AGAIN, e.message()).await;
            return linger(stream).await;
        }
    };
    let limits = &config.limits;
    let connection_id = format!("{:016x}", rand::random::<u64>());
    out.push(Frame::Welcome {
        connection: &connection_id,
        sub: identity.sub.as_deref(),
        heartbeat: config.heartbeat,
        max_channels: limits.max_channels,
        max_message_bytes: limits.max_ws_message_bytes(),
        messages_per_second: limits.ws_messages_per_second.get(),
    });
    if out.flush().await.is_err() {
        return;
    }
    let deadline = identity.expires_at.and_then(|at| {
        let left = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        tokio::time::Instant::now().checked_add(left)
    });
    let mut conn = Conn {
        sub: rt.inner.hub.subscriber(),
        s: Session::new(rt.store().clone(), rt.inner.known.clone(), out),
        limiter: governor::RateLimiter::direct(governor::Quota::per_second(limits.ws_messages_per_second)),
        refused: 0,
        heard: tokio::time::Instant::now(),
        rt: rt.clone(),
        auth,
        identity,
        connection: connection_id,
        filters: 0,
        deadline,
    };
    let end = conn.run(&mut stream).await;
    drop(permit);
    if let Some(end) = end {
        conn.s.out.close(end.code, &end.reason).await;
        linger(stream).await;
    }
}

/// After our close frame, reads until the client's (or a second), so the close arrives before
/// the socket is dropped: unread input at close would reset the connection, and the client
/// would see 1006 instead of our code.
async fn linger(mut stream: SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(msg)) = stream.next().await {
            if let Message::Close(_) = msg {
                break;
            }
        }
    })
    .await;
}

/// Who the connection is: from the upgrade request (a bearer token, `?token=`, a cookie), or
/// else from a first `{"type":"auth","token":…}` message.
async fn authenticate(
    rt: &Tidings,
    auth: &mut AuthRequest,
    stream: &mut SplitStream<WebSocket>,
) -> Result<Identity, (u16, ApiError)> {
    let config = &rt.inner.config;
    if config.authorizer.is_none() {
        return Ok(Identity::anonymous());
    }
    let refused = |e: AuthError| {
        let code = match &e {
            AuthError::Unauthenticated(_) => code::UNAUTHENTICATED,
            AuthError::Forbidden(_) => code::FORBIDDEN,
            _ => close_code::ERROR,
        };
        (code, ApiError::from(e))
    };
    match authorize_read(config, auth, &[]).await {
        Ok(identity) => return Ok(identity),
        // A credential was given and refused: nothing to wait for.
        Err(e) if auth.bearer().is_some() || !matches!(e, AuthError::Unauthenticated(_)) => {
            return Err(refused(e))
        }
        Err(_) => {}
    }
    let timeout = config.limits.head_timeout;
    let first = tokio::time::timeout(timeout, async {
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(text))) => return Some(text),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                // Not an `auth` message: answered as one that is not.
                Some(Ok(Message::Binary(_))) => return Some(Default::default()),
                _ => return None,
            }
        }
    })
    .await;
    let unauthenticated = |m: String| {
        (
            code::UNAUTHENTICATED,
            ApiError::from(AuthError::Unauthenticated(m)),
        )
    };
    let text = match first {
        Ok(Some(text)) => text,
        Ok(None) => return Err(unauthenticated("the connection closed before authenticating".into())),
        Err(_) => {
            return Err(unauthenticated(format!(
                "no credential within {:?} (head_timeout); send {{\"type\":\"auth\",\"token\":\"<jwt>\"}} first, or connect with ?token=<jwt>",
                timeout
            )))
        }
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AuthMessage {
        #[serde(rename = "type")]
        kind: String,
        token: String,
        #[serde(rename = "ref")]
        _reference: Option<Value>,
    }
    match serde_json::from_str::<AuthMessage>(&text) {
        Ok(m) if m.kind == "auth" => set_bearer(auth, &m.token),
        _ => {
            return Err(unauthenticated(
                "not authenticated; the first message must be {\"type\":\"auth\",\"token\":\"<jwt>\"} (or connect with ?token=<jwt>)".into(),
            ))
        }
    }
    authorize_read(config, auth, &[]).await.map_err(refused)
}

fn push_error(out: &mut impl Transport, reference: Ref<'_>, e: &ApiError) {
    let body = match e.body() {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    out.push(Frame::Error {
        reference,
        status: e.status().as_u16(),
        body: &body,
    });
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_message", message)
}

const TYPES: &str = "subscribe, unsubscribe, emit, presence.join, presence.leave, ping";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeMessage {
    channels: Vec<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    cursor: Option<String>,
    /// Join the presence of the channels that have it: `true`, or the member's data.
    #[serde(default)]
    presence: Option<Value>,
    /// Only events that pass this filter (see the README's filters).
    #[serde(default)]
    filter: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceJoinMessage {
    channel: String,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceLeaveMessage {
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeMessage {
    channels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitMessage {
    channel: String,
    event: String,
    data: Value,
    #[serde(default)]
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PingMessage {}

/// Reads a message's body as `T`, naming what is wrong.
fn body<T: serde::de::DeserializeOwned>(
    kind: &str,
    map: Map<String, Value>,
    expected: &str,
) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(map))
        .map_err(|e| invalid(format!("{kind}: {e}; expected {expected}")))
}

impl Conn {
    /// Serves the connection until it ends; `Some` says how to close it.
    async fn run(&mut self, stream: &mut SplitStream<WebSocket>) -> Option<Close> {
        let heartbeat = self.rt.inner.config.heartbeat;
        // A client that answers nothing for two heartbeats (not even the pong its WebSocket
        // sends by itself) is gone.
        let silence = heartbeat * 2 + Duration::from_secs(1);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing = self.rt.inner.closing.subscribe();
        let expiry = until(self.deadline);
        tokio::pin!(expiry);
        loop {
            let step = tokio::select! {
                biased;
                // As an SSE stream: it ends, and the client resumes from the cursor it holds.
                _ = closed(&mut closing) => Err(Some(Close::new(close_code::AWAY, "server is shutting down; reconnect with your cursor"))),
                _ = &mut expiry => {
                    self.s.out.push(Frame::Expired { cursor: &self.s.cursor });
                    Err(Some(Close::new(code::EXPIRED, "token expired")))
                }
                next = self.sub.recv() => match next {
                    None => {
                        self.s.out.push(Frame::Lagged {
                            cursor: &self.s.cursor,
                            reason: "fell behind the live stream; reconnect and subscribe with this cursor to resume",
                        });
                        Err(Some(Close::new(code::LAGGED, "fell behind; resume with the cursor of the lagged frame")))
                    }
                    Some(d) => {
                        self.s.live_from(&mut self.sub, &d);
                        Ok(())
                    }
                },
                msg = stream.next() => {
                    self.heard = tokio::time::Instant::now();
                    match msg {
                        None => Err(None),
                        Some(Err(e)) => Err(read_error(e, self.rt.inner.config.limits.max_ws_message_bytes())),
                        Some(Ok(Message::Text(text))) => self.message(text.as_str()).await,
                        // Counted against the rate like text, or a flood of them would never close.
                        Some(Ok(Message::Binary(_))) => self.admit().map(|admitted| {
                            if admitted {
                                push_error(&mut self.s.out, None, &invalid("binary messages are not accepted; send JSON text"));
                            }
                        }),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                        Some(Ok(Message::Close(_))) => Err(Some(Close::new(close_code::NORMAL, ""))),
                    }
                }
                _ = tick.tick() => {
                    if self.heard.elapsed() > silence {
                        Err(Some(Close::new(code::NO_HEARTBEAT, "no answer to heartbeats")))
                    } else {
                        // A protocol ping every interval, which browsers answer by themselves;
                        // a `ping` frame the page can see when nothing else was said. The ping
                        // itself does not count as saying something, or an idle connection
                        // would get one every other interval.
                        let _ = self.s.out.sink.feed(Message::Ping(Default::default())).await;
                        if self.s.quiet() {
                            self.s.out.push(Frame::Ping);
                        }
                        Ok(())
                    }
                }
            };
            match step {
                Ok(()) => {
                    if self.s.out.flush().await.is_err() {
                        return None;
                    }
                }
                Err(end) => return end,
            }
        }
    }

    /// Handles one client message.
    async fn message(&mut self, text: &str) -> Step {
        if !self.admit()? {
            return Ok(());
        }
        let mut map = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                push_error(
                    &mut self.s.out,
                    None,
                    &invalid(format!(
                        "a message is a JSON object with a type; types are {TYPES}"
                    )),
                );
                return Ok(());
            }
            Err(e) => {
                push_error(
                    &mut self.s.out,
                    None,
                    &invalid(format!(
                        "not JSON: {e}; a message is a JSON object with a type ({TYPES})"
                    )),
                );
                return Ok(());
            }
        };
        let reference = match map.remove("ref") {
            None => None,
            Some(v @ (Value::String(_) | Value::Number(_))) => {
                let raw = serde_json::value::to_raw_value(&v)
                    .ok()
                    .filter(|r| r.get().len() <= MAX_REF_LEN);
                if raw.is_none() {
                    push_error(
                        &mut self.s.out,
                        None,
                        &invalid(format!("ref is longer than {MAX_REF_LEN} characters")),
                    );
                    return Ok(());
                }
                raw
            }
            Some(_) => {
                push_error(
                    &mut self.s.out,
                    None,
                    &invalid("ref must be a string or a number"),
                );
                return Ok(());
            }
        };
        let reference = reference.as_deref();
        let kind = match map.remove("type") {
            Some(Value::String(kind)) => kind,
            _ => {
                push_error(
                    &mut self.s.out,
                    reference,
                    &invalid(format!("a message needs a type; types are {TYPES}")),
                );
                return Ok(());
            }
        };
        let answer = match kind.as_str() {
            "subscribe" => match body(
                &kind,
                map,
                r#"{"type":"subscribe","channels":[…],"events"?:[…],"cursor"?:"…","ref"?:…}"#,
            ) {
                Ok(m) => return self.subscribe(reference, m).await,
                Err(e) => Err(e),
            },
            "unsubscribe" => match body(&kind, map, r#"{"type":"unsubscribe","channels":[…],"ref"?:…}"#) {
                Ok(m) => self.unsubscribe(reference, m).await,
                Err(e) => Err(e),
            },
            "emit" => match body::<EmitMessage>(
                &kind,
                map,
                r#"{"type":"emit","channel":"…","event":"…","data":…,"idempotency_key"?:"…","ref"?:…}"#,
            ) {
                Ok(m) => self.emit(reference, m).await,
                Err(e) => Err(e),
            },
            "presence.join" => match body::<PresenceJoinMessage>(
                &kind,
                map,
                r#"{"type":"presence.join","channel":"…","data"?:…,"ref"?:…}"#,
            ) {
                Ok(m) => self.presence_join(reference, &m.channel, m.data.as_ref()).await,
                Err(e) => Err(e),
            },
            "presence.leave" => match body::<PresenceLeaveMessage>(
                &kind,
                map,
                r#"{"type":"presence.leave","channel":"…","ref"?:…}"#,
            ) {
                Ok(m) => self.presence_leave(reference, &m.channel).await,
                Err(e) => Err(e),
            },
            "ping" => body::<PingMessage>(&kind, map, r#"{"type":"ping","ref"?:…}"#).map(|_| {
                self.s.send(Frame::Pong { reference });
            }),
            "auth" => Err(ApiError::bad_request(
                "already_authenticated",
                "this connection is authenticated already; to use another token, connect again",
            )),
            other => Err(invalid(format!(
                "unknown type {:?}; types are {TYPES}",
                other.chars().take(64).collect::<String>()
            ))),
        };
        if let Err(e) = answer {
            push_error(&mut self.s.out, reference, &e);
        }
        Ok(())
    }

    /// Takes one message (of any kind) from the connection's rate: `Ok(false)` when it is
    /// refused (an error frame says so), `Err` to close a connection that keeps sending at twice
    /// the rate.
    fn admit(&mut self) -> Result<bool, Option<Close>> {
        if self.limiter.check().is_ok() {
            self.refused = 0;
            return Ok(true);
        }
        self.refused += 1;
        let per_second = self.rt.inner.config.limits.ws_messages_per_second.get();
        if self.refused > per_second {
            return Err(Some(Close::new(code::TOO_MANY_MESSAGES, "too many messages")));
        }
        let e = ApiError::limit(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("more than {per_second} messages per second on this connection (ws_messages_per_second); this one was dropped"),
            per_second,
        );
        push_error(&mut self.s.out, None, &e);
        Ok(false)
    }

    async fn subscribe(&mut self, reference: Ref<'_>, m: SubscribeMessage) -> Step {
        let channels = match self.check_subscribe(&m) {
            Ok(channels) => channels,
            Err(e) => {
                push_error(&mut self.s.out, reference, &e);
                return Ok(());
            }
        };
        let events = match &m.events {
            None => None,
            Some(list) if list.is_empty() => None,
            Some(list) => match check_events(&self.rt, list.iter().map(String::as_str)) {
                Ok(set) => Some(set),
                Err(e) => {
                    push_error(&mut self.s.out, reference, &e);
                    return Ok(());
                }
            },
        };
        let filter = match self.subscribe_filter(m.filter.as_ref(), events.as_ref()) {
            Ok(filter) => filter,
            Err(e) => {
                push_error(&mut self.s.out, reference, &e);
                return Ok(());
            }
        };
        let events = crate::session::Want::new(events, filter);
        let cursor = match m.cursor.as_deref() {
            None | Some("") => None,
            Some(text) => match Cursor::parse(text) {
                Ok(c) => Some(c),
                Err(e) => {
                    push_error(
                        &mut self.s.out,
                        reference,
                        &ApiError::bad_request("invalid_cursor", e.to_string()),
                    );
                    return Ok(());
                }
            },
        };
        let config = &self.rt.inner.config;
        if let Err(e) = authorize_read(config, &self.auth, &channels).await {
            push_error(&mut self.s.out, reference, &e.into());
            return Ok(());
        }
        let presence = &self.rt.inner.presence;
        let with_presence: Vec<Channel> = channels.iter().filter(|c| presence.enabled(c)).cloned().collect();
        let join_presence = m
            .presence
            .as_ref()
            .filter(|v| !matches!(v, Value::Null | Value::Bool(false)));
        if join_presence.is_some() && with_presence.is_empty() {
            let e = crate::presence::PresenceError::disabled(&channels[0], &self.rt.inner.config.presence);
            push_error(&mut self.s.out, reference, &e.into());
            return Ok(());
        }
        // Each channel's presence stream is joined with it: its joins and leaves arrive in order
        // from the moment of the snapshot read below.
        let mut hub_channels = channels.clone();
        hub_channels.extend(with_presence.iter().map(Channel::presence));
        let start = match self.sub.join(&hub_channels, &events).await {
            Ok(start) => start,
            Err(e) => {
                push_error(&mut self.s.out, reference, &ApiError::store(e));
                return Ok(());
            }
        };
        let start: Vec<_> = start
            .into_iter()
            .filter(|(c, _)| c.presence_of().is_none())
            .collect();
        self.s.send(Frame::Subscribed {
            reference,
            channels: &channels,
        });
        match self.s.join(&start, events, cursor.as_ref(), self.deadline).await {
            Ok(()) => {}
            Err(ReplayError::Gone) => return Err(None),
            Err(ReplayError::Expired) => {
                self.s.out.push(Frame::Expired {
                    cursor: &self.s.cursor,
                });
                return Err(Some(Close::new(code::EXPIRED, "token expired")));
            }
            Err(ReplayError::Store(e)) => {
                // Live from a half-read replay would skip what is between: the channels leave,
                // and the client subscribes again from the cursor of the last frame it got.
                tracing::warn!(error = %e, "replay failed; the subscribe is undone");
                self.sub.leave(&hub_channels);
                self.s.leave(&channels);
                push_error(&mut self.s.out, reference, &ApiError::store(e));
                return Ok(());
            }
        }
        self.s.spoke();
        self.s.out.push(Frame::Ready {
            cursor: &self.s.cursor,
            channels: &channels,
            heartbeat: config.heartbeat,
            reference,
        });
        if let Some(data) = join_presence {
            let data = if data.is_boolean() { None } else { Some(data) };
            let mut joined = Vec::new();
            for channel in &with_presence {
                match self
                    .s
                    .join_presence(presence, &self.connection, channel, &self.identity, data)
                    .await
                {
                    Ok(()) => joined.push(channel.clone()),
                    Err(e) => push_error(&mut self.s.out, reference, &e.into()),
                }
            }
            if !joined.is_empty() {
                self.s.send(Frame::PresenceJoined {
                    reference,
                    channels: &joined,
                });
            }
        }
        for channel in &with_presence {
            if let Err(e) = self.s.watch_presence(presence, &self.connection, channel).await {
                push_error(&mut self.s.out, reference, &ApiError::store(e));
            }
        }
        Ok(())
    }

    /// The channel of a presence request: subscribed on this connection, with presence.
    fn presence_channel(&self, name: &str) -> Result<Channel, ApiError> {
        let channel = self.rt.parse_channel(name).map_err(ApiError::channel)?;
        if !self.s.watches(&channel) {
            return Err(ApiError::bad_request(
                "not_subscribed",
                format!("channel {name:?} is not subscribed on this connection; subscribe to it first"),
            ));
        }
        Ok(channel)
    }

    async fn presence_join(
        &mut self,
        reference: Ref<'_>,
        name: &str,
        data: Option<&Value>,
    ) -> Result<(), ApiError> {
        let channel = self.presence_channel(name)?;
        let presence = &self.rt.inner.presence;
        self.s
            .join_presence(presence, &self.connection, &channel, &self.identity, data)
            .await?;
        self.s.send(Frame::PresenceJoined {
            reference,
            channels: std::slice::from_ref(&channel),
        });
        Ok(())
    }

    async fn presence_leave(&mut self, reference: Ref<'_>, name: &str) -> Result<(), ApiError> {
        let channel = self.presence_channel(name)?;
        match self.s.leave_presence(&channel).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ApiError::bad_request(
                    "not_present",
                    format!("this connection has not joined the presence of {name:?}"),
                ))
            }
            Err(e) => return Err(ApiError::store(e)),
        }
        self.s.send(Frame::PresenceLeft {
            reference,
            channels: std::slice::from_ref(&channel),
        });
        Ok(())
    }

    /// The subscription's filter: the client's own (checked against the schema of the events
    /// it may get, and counted against the filters a connection may hold) and its credential's.
    fn subscribe_filter(
        &mut self,
        given: Option<&Value>,
        events: Option<&std::collections::HashSet<String>>,
    ) -> Result<Option<crate::filter::Filter>, ApiError> {
        let own = match given {
            None | Some(Value::Null) => None,
            Some(v) => {
                if self.filters >= crate::filter::MAX_FILTERS_PER_CONNECTION {
                    let max = crate::filter::MAX_FILTERS_PER_CONNECTION;
                    return Err(ApiError::limit(
                        StatusCode::BAD_REQUEST,
                        "too_many_filters",
                        format!("this connection holds {max} filtered subscriptions already; at most {max} per connection"),
                        max,
                    ));
                }
                let text = v.to_string();
                Some(crate::http::check_filter(&self.rt, &text, events)?)
            }
        };
        let counted = own.is_some();
        let filter = crate::http::enforce_filter(&self.identity, own)?;
        if counted {
            self.filters += 1;
        }
        Ok(filter)
    }

    fn check_subscribe(&self, m: &SubscribeMessage) -> Result<Vec<Channel>, ApiError> {
        let names: Vec<&str> = m.channels.iter().map(String::as_str).collect();
        let channels = check_channels(&self.rt, &names, self.s.len())?;
        if channels.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_channel",
                "no channel given; subscribe with \"channels\": [\"<name>\", …]",
            ));
        }
        if let Some(c) = channels.iter().find(|c| self.s.watches(c)) {
            return Err(ApiError::bad_request(
                "already_subscribed",
                format!(
                    "channel {:?} is subscribed on this connection already; unsubscribe it first",
                    c.as_str()
                ),
            ));
        }
        Ok(channels)
    }

    async fn unsubscribe(&mut self, reference: Ref<'_>, m: UnsubscribeMessage) -> Result<(), ApiError> {
        let names: Vec<&str> = m.channels.iter().map(String::as_str).collect();
        let channels = check_channels(&self.rt, &names, 0)?;
        if let Some(c) = channels.iter().find(|c| !self.s.watches(c)) {
            return Err(ApiError::bad_request(
                "not_subscribed",
                format!("channel {:?} is not subscribed on this connection", c.as_str()),
            ));
        }
        for channel in &channels {
            if self.s.is_member(channel) {
                if let Err(e) = self.s.leave_presence(channel).await {
                    tracing::warn!(error = %e, %channel, "could not leave presence; the member lapses");
                }
            }
        }
        let mut hub_channels = channels.clone();
        hub_channels.extend(channels.iter().map(Channel::presence));
        self.sub.leave(&hub_channels);
        self.s.leave(&channels);
        self.s.spoke();
        self.s.out.push(Frame::Unsubscribed {
            reference,
            channels: &channels,
            cursor: &self.s.cursor,
        });
        Ok(())
    }

    async fn emit(&mut self, reference: Ref<'_>, m: EmitMessage) -> Result<(), ApiError> {
        let has_key = self
            .auth
            .bearer()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), self.rt.emit_key().as_bytes()));
        let added = publish(
            &self.rt,
            &self.auth,
            has_key,
            &m.channel,
            &m.event,
            &m.data,
            m.idempotency_key.as_deref(),
        )
        .await?;
        self.s.send(Frame::Emitted {
            reference,
            id: added.id,
            duplicate: added.duplicate,
        });
        Ok(())
    }
}

/// How to close after a read error: too large a message gets 1009; others mean the client is
/// gone or broke the protocol, and nothing more can be said.
fn read_error(e: axum::Error, max: usize) -> Option<Close> {
    let text = e.to_string();
    let inner = e.into_inner();
    let too_large = inner
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
    if too_large {
        return Some(Close::new(
            close_code::SIZE,
            format!("message too large; at most {max} bytes"),
        ));
    }
    tracing::debug!(error = %text, "WebSocket read failed");
    None
}
