//! The HTTP surface: `POST /emit`, `GET /realtime` (SSE), `GET /ws` (WebSocket), `GET /history`,
//! `GET /presence`, `GET /health`,
//! `GET /schema`, the demo page at `/`, and, when [`Config::app_dir`](crate::Config) is set, a
//! static app at `/app/`.

use std::collections::HashSet;
use std::future::Future;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, get_service, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::{ServeDir, ServeFile};

use crate::auth::{authorize_publish, authorize_read, AuthError, AuthRequest, Identity};

use crate::channel::Channel;
use crate::cursor::Cursor;
use crate::id::Position;
use crate::realtime::{EmitError, EmitOptions, Scan, Tidings};
use crate::schema::ValidateError;
use crate::sse::{Sink, StreamRequest, StreamSettings};
use crate::store::StoreError;

/// An error at the HTTP edge: a status and a JSON body `{"error", "message", …}`.
///
/// 4xx bodies say what was wrong and what is allowed; 5xx bodies say nothing internal (the cause
/// is logged).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<Box<Value>>,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` header of `seconds` (at least 1).
    fn retry_after_secs(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// The `Retry-After` header's value, in seconds.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// A limit that refused the request: `"limit": value` goes into the body.
    pub(crate) fn limit(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        limit: impl Into<Value>,
    ) -> Self {
        ApiError::new(status, code, message).with(json!({ "limit": limit.into() }))
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A channel name that is not allowed; a too-long one names the limit.
    pub(crate) fn channel(e: crate::channel::ChannelError) -> Self {
        match e {
            crate::channel::ChannelError::TooLong { max, .. } => {
                ApiError::limit(StatusCode::BAD_REQUEST, "invalid_channel", e.to_string(), max)
            }
            e => ApiError::bad_request("invalid_channel", e.to_string()),
        }
    }

    fn with(mut self, extra: Value) -> Self {
        self.extra = Some(Box::new(extra));
        self
    }

    pub(crate) fn store(e: StoreError) -> Self {
        if let StoreError::Busy { max_count, .. } = &e {
            tracing::warn!(error = %e, "refusing an emit: too many are waiting for Redis");
            return ApiError::limit(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_busy",
                format!("{e}; nothing was stored (--redis-max-pending)"),
                *max_count,
            )
            .retry_after_secs(1);
        }
        tracing::error!(error = %e, "store failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the event store is unavailable; retry later",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What was wrong, for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl ApiError {
    /// The JSON body.
    pub(crate) fn body(&self) -> Value {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let (Some(Value::Object(extra)), Value::Object(map)) = (self.extra.as_deref(), &mut body) {
            map.extend(extra.clone());
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<crate::limits::ConnectionRefused> for ApiError {
    fn from(e: crate::limits::ConnectionRefused) -> Self {
        use crate::limits::ConnectionRefused;
        match e {
            ConnectionRefused::Node(max) => ApiError::limit(
                StatusCode::SERVICE_UNAVAILABLE,
                "node_full",
                format!("this node holds its limit of {max} streams (max_connections); retry later or on another node"),
                max,
            )
            .retry_after_secs(5),
            ConnectionRefused::Identity(max) => ApiError::limit(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                format!(
                    "this identity already holds {max} streams on this node \
                     (max_connections_per_identity); close one, or watch more channels on one stream"
                ),
                max,
            )
            .retry_after_secs(5),
        }
    }
}

impl From<crate::limits::RateLimited> for ApiError {
    fn from(e: crate::limits::RateLimited) -> Self {
        let retry = e.retry_after.as_secs_f64().ceil() as u64;
        ApiError::limit(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} emits per second from this publisher (emits_per_second); retry in {} ms",
                e.per_second,
                e.retry_after.as_millis().max(1)
            ),
            e.per_second,
        )
        .retry_after_secs(retry)
    }
}

impl From<crate::filter::FilterError> for ApiError {
    fn from(e: crate::filter::FilterError) -> Self {
        use crate::filter::FilterError;
        match &e {
            FilterError::TooLarge { max, .. } => {
                let max = *max;
                ApiError::limit(StatusCode::BAD_REQUEST, "invalid_filter", e.to_string(), max)
            }
            _ => ApiError::bad_request("invalid_filter", e.to_string()),
        }
    }
}

impl From<crate::presence::PresenceError> for ApiError {
    fn from(e: crate::presence::PresenceError) -> Self {
        use crate::presence::PresenceError;
        match e {
            e @ PresenceError::Disabled { .. } => ApiError::bad_request("presence_disabled", e.to_string()),
            PresenceError::TooLarge { max, .. } => {
                let message = e.to_string();
                ApiError::limit(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "presence_data_too_large",
                    message,
                    max,
                )
            }
            PresenceError::Full { max, .. } => {
                let message = e.to_string();
                ApiError::limit(StatusCode::CONFLICT, "presence_full", message, max)
            }
            PresenceError::Invalid(e) => {
                let message = format!("presence data {e}");
                let errors: Vec<Value> = match &e {
                    ValidateError::Invalid { violations, .. } => violations
                        .iter()
                        .map(|v| json!({ "pointer": format!("/data{}", v.pointer), "message": v.message }))
                        .collect(),
                    _ => Vec::new(),
                };
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_presence_data", message)
                    .with(json!({ "errors": errors }))
            }
            PresenceError::Store(e) => ApiError::store(e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(reason) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", reason)
            }
            AuthError::Forbidden(reason) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", reason),
            AuthError::Failed(reason) => {
                tracing::error!(%reason, "the authorizer failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "authorizer_failed",
                    "the authorizer failed; the request was refused",
                )
            }
        }
    }
}

impl From<EmitError> for ApiError {
    fn from(e: EmitError) -> Self {
        match e {
            EmitError::Channel(e) => ApiError::channel(e),
            EmitError::Invalid(ValidateError::UnknownEvent { name, known }) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_event",
                format!("unknown event {name:?}; known events: {known}"),
            ),
            EmitError::Invalid(e @ ValidateError::Invalid { .. }) => {
                let message = e.to_string();
                let ValidateError::Invalid { event, violations } = e else {
                    unreachable!()
                };
                let errors: Vec<Value> = violations
                    .iter()
                    .map(|v| json!({ "pointer": format!("/data{}", v.pointer), "message": v.message }))
                    .collect();
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_payload", message)
                    .with(json!({ "event": event, "errors": errors }))
            }
            EmitError::TooLarge { size, max } => ApiError::limit(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("payload is {size} bytes; at most {max} are allowed"),
                max,
            ),
            EmitError::Serialize(e) => ApiError::bad_request("invalid_json", e.to_string()),
            e @ EmitError::IdempotencyKey(_) => {
                ApiError::bad_request("invalid_idempotency_key", format!("Idempotency-Key: {e}"))
            }
            EmitError::Store(e) => ApiError::store(e),
        }
    }
}

/// The tidings routes, ready to serve or to nest into an application's own router.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let rt = tidings::Tidings::from_config(tidings::Config::default()).await?;
/// let app = axum::Router::new().nest("/realtime-api", tidings::router(rt));
/// # let _ = app; Ok(()) }
/// ```
pub fn router(rt: Tidings) -> Router {
    let mut router = Router::new()
        .route("/", get(index))
        .route("/emit", post(emit))
        .route("/realtime", get(realtime))
        .route("/ws", get(crate::ws::upgrade))
        .route("/history", get(history))
        .route("/presence", get(presence))
        .route("/health", get(health))
        .route("/schema", get(schema));
    if let Some(dir) = &rt.inner.config.app_dir {
        router = router
            .route("/app", get(app_slash))
            .nest_service("/app/", app_service(dir));
    }
    let cors = cors_layer(&rt.inner.config.cors_origins);
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(rt);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// CORS for the listed origins, with credentials; `None` (no headers: same-origin only) when
/// the list is empty.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o.trim_end_matches('/')) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(origin = %o, "ignoring an invalid CORS origin");
                None
            }
        })
        .collect();
    if list.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("last-event-id"),
                header::HeaderName::from_static("idempotency-key"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// The CORS response headers for the raw SSE path: `Some` when `origin` is allowed.
pub(crate) fn cors_allowed(rt: &Tidings, origin: Option<&HeaderValue>) -> Option<String> {
    let origin = origin?.to_str().ok()?;
    rt.inner
        .config
        .cors_origins
        .iter()
        .any(|o| o.trim_end_matches('/') == origin)
        .then(|| origin.to_string())
}

/// `/app` → `/app/`, keeping the query (`?room=…`). Relative, so it still lands right when this
/// router is nested under a prefix.
async fn app_slash(RawQuery(query): RawQuery) -> Redirect {
    match query {
        Some(q) => Redirect::permanent(&format!("app/?{q}")),
        None => Redirect::permanent("app/"),
    }
}

/// The static app in `dir`: its files, and `index.html` for `/app/` and, as single-page apps
/// expect, for any path under `/app/` that is not a file (a client-side route, or a directory).
/// Without `dir/index.html` (the binary refuses to start then) those are an empty 404. GET and
/// HEAD only.
fn app_service(dir: &std::path::Path) -> axum::routing::MethodRouter {
    // No index.html-per-directory: ServeDir would redirect `/app/assets` to the prefix-stripped
    // `/assets/`, outside the app.
    let files = ServeDir::new(dir)
        .append_index_html_on_directories(false)
        .fallback(ServeFile::new(dir.join("index.html")));
    get_service(files).fallback(|method: Method, OriginalUri(uri): OriginalUri| async move {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{method} is not allowed on {}; the app is served with GET",
                uri.path()
            ),
        )
    })
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}; routes are POST /emit, GET /realtime, GET /ws, GET /history, GET /presence, GET /health, GET /schema",
            uri.path()
        ),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; routes are POST /emit, GET /realtime, GET /ws, GET /history, GET /presence, GET /health, GET /schema",
    )
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../web/index.html"))
}

async fn schema(State(rt): State<Tidings>) -> Json<Value> {
    Json(rt.registry().file().root.clone())
}

async fn health(State(rt): State<Tidings>) -> Response {
    let (channels, subscribers) = rt.inner.hub.stats();
    let store = rt.store().kind();
    match rt.store().ping().await {
        Ok(()) => Json(json!({
            "status": "ok",
            "store": store,
            "channels_watched": channels,
            "subscribers": subscribers,
            "streams": rt.inner.connections.open(),
            "skipped_entries": crate::store::skipped_entries(),
        }))
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "store": store })),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitBody {
    channel: String,
    event: String,
    data: Value,
}

pub(crate) fn check_key(rt: &Tidings, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m.to_string());
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization header; send Authorization: Bearer <emit key>"))?;
    let given = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("Authorization must be Bearer <emit key>"))?;
    if !constant_time_eq(given.trim().as_bytes(), rt.emit_key().as_bytes()) {
        return Err(unauthorized("wrong emit key"));
    }
    Ok(())
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads an emit body: at most `max_payload_bytes` (plus room for the envelope), all of it
/// within `head_timeout` from the first poll. One deadline for the whole body, not per chunk: a
/// body trickled a byte at a time is cut off too.
async fn read_body(rt: &Tidings, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let limits = &rt.inner.config.limits;
    let max = limits.max_payload_bytes;
    let allowed = max + ENVELOPE_ROOM;
    let too_large = || {
        ApiError::limit(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than allowed; payloads may be at most {max} bytes"),
            max,
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > allowed as u64) {
        return Err(too_large());
    }
    let deadline = tokio::time::Instant::now() + limits.head_timeout;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(declared.map_or(1024, |n| n as usize));
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                let limit = limits.head_timeout.as_secs();
                return Err(ApiError::limit(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!("the request body took longer than {limit} s to arrive (head_timeout)"),
                    limit,
                ));
            }
            Ok(None) => return Ok(Bytes::from(buf)),
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    format!("the request body could not be read: {e}"),
                ))
            }
            Ok(Some(Ok(chunk))) => {
                if buf.len() + chunk.len() > allowed {
                    return Err(too_large());
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
}

/// Bytes an emit body may hold beyond its payload: the channel, the event name, the JSON around.
const ENVELOPE_ROOM: usize = 1024;

async fn emit(State(rt): State<Tidings>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    // The emit key publishes anywhere; anything else goes to the authorizer, when there is one.
    let has_key = check_key(&rt, &headers).is_ok();
    if !has_key && rt.inner.config.authorizer.is_none() {
        check_key(&rt, &headers)?;
    }
    let body = read_body(&rt, &headers, body).await?;
    let req: EmitBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("{e}; expected {{\"channel\": string, \"event\": string, \"data\": payload}}"),
        )
    })?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_idempotency_key",
                        "Idempotency-Key is not visible ASCII; use 1 to 255 visible ASCII characters, such as order-42-paid",
                    )
                })?
                .to_string(),
        ),
    };
    let auth = AuthRequest::new(headers, None);
    let added = publish(
        &rt,
        &auth,
        has_key,
        &req.channel,
        &req.event,
        &req.data,
        key.as_deref(),
    )
    .await?;
    Ok(Json(json!({ "id": added.id, "duplicate": added.duplicate })))
}

/// An emit from a client, over HTTP or WebSocket: the channel checked, the publisher authorized
/// (`has_key`: it holds the emit key) and rate limited, the payload validated, then stored.
pub(crate) async fn publish(
    rt: &Tidings,
    auth: &AuthRequest,
    has_key: bool,
    channel: &str,
    event: &str,
    data: &Value,
    idempotency_key: Option<&str>,
) -> Result<crate::store::Appended, ApiError> {
    let channel = rt.parse_channel(channel).map_err(ApiError::channel)?;
    if has_key {
        rt.inner.emit_rate.check_emit_key()?;
    } else {
        let identity = authorize_publish(&rt.inner.config, auth, &channel).await?;
        rt.inner.emit_rate.check(identity.sub.as_deref().unwrap_or(""))?;
    }
    let mut opts = EmitOptions::default();
    if let Some(key) = idempotency_key {
        opts = opts.idempotency_key(key);
    }
    Ok(rt.emit_json_with(&channel, event, data, opts).await?)
}

/// Query parameters, where `channel` may repeat.
fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn one<'a>(query: &'a [(String, String)], key: &str) -> Result<Option<&'a str>, ApiError> {
    let mut found = query.iter().filter(|(k, _)| k == key);
    let first = found.next().map(|(_, v)| v.as_str());
    if found.next().is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("parameter {key:?} given more than once"),
        ));
    }
    Ok(first)
}

fn known_keys(query: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    match query.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        Some((k, _)) => Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "unknown parameter {:?}; allowed are {}",
                k.chars().take(64).collect::<String>(),
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

async fn realtime(
    State(rt): State<Tidings>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let req = prepare_stream(
        &rt,
        raw.as_deref(),
        headers.get("last-event-id").map(|v| v.as_bytes()),
    )?;
    let identity = authorize_read(&rt.inner.config, &AuthRequest::new(headers, raw), &req.channels).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let stream = open_stream(&rt, req, identity, tx, None)
        .await
        .map_err(|(e, _)| e)?;
    tokio::spawn(stream);
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Checks an SSE request (query string and `Last-Event-ID` header): every 400 happens here,
/// before anything is subscribed or written.
pub(crate) fn prepare_stream(
    rt: &Tidings,
    raw_query: Option<&str>,
    last_event_id: Option<&[u8]>,
) -> Result<StreamRequest, ApiError> {
    let query = parse_query(raw_query);
    known_keys(
        &query,
        &["channel", "events", "cursor", "token", "presence", "filter"],
    )?;

    let names: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "channel")
        .flat_map(|(_, v)| v.split(','))
        .collect();
    let channels = check_channels(rt, &names, 0)?;
    if channels.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_channel",
            "no channel given; add ?channel=<name> (repeat it, or separate names with commas, for more)",
        ));
    }
    let (events, filter) = selection(rt, &query)?;

    // A browser's reconnect sends the newest cursor as Last-Event-ID, while its URL still holds
    // whatever cursor it first connected with: the header wins.
    let header_cursor = match last_event_id {
        None => None,
        Some(v) => Some(
            std::str::from_utf8(v)
                .ok()
                .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t'))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_cursor",
                        "Last-Event-ID is not visible ASCII; send the id: of the last event seen",
                    )
                })?,
        ),
    };
    let cursor_text = match header_cursor {
        Some(h) if !h.is_empty() => Some(h),
        _ => one(&query, "cursor")?,
    };
    let cursor = match cursor_text {
        None | Some("") => None,
        Some(text) => {
            Some(Cursor::parse(text).map_err(|e| ApiError::bad_request("invalid_cursor", e.to_string()))?)
        }
    };
    let presence = match one(&query, "presence")? {
        None => None,
        Some("") => Some(None),
        Some(text) => Some(Some(serde_json::from_str::<Value>(text).map_err(|e| {
            ApiError::bad_request(
                "invalid_presence",
                format!("presence is not JSON: {e}; give the member's data as JSON (presence={{\"status\":\"editing\"}}), or presence= for none"),
            )
        })?)),
    };
    Ok(StreamRequest {
        channels,
        events,
        filter,
        cursor,
        known: rt.inner.known.clone(),
        presence,
    })
}

/// Checks channel names (duplicates dropped) for a connection that watches `watched` already:
/// 400 `invalid_channel`, or `too_many_channels` beyond [`Limits::max_channels`] in all.
pub(crate) fn check_channels(rt: &Tidings, names: &[&str], watched: usize) -> Result<Vec<Channel>, ApiError> {
    let max = rt.inner.config.limits.max_channels;
    let mut channels: Vec<Channel> = Vec::new();
    let mut seen: HashSet<Channel> = HashSet::new();
    for name in names {
        let channel = rt.parse_channel(name).map_err(ApiError::channel)?;
        if seen.insert(channel.clone()) {
            channels.push(channel);
            if watched + channels.len() > max {
                // Refused as soon as it is known, without checking the rest.
                let requested = watched + names.len();
                return Err(ApiError::limit(
                    StatusCode::BAD_REQUEST,
                    "too_many_channels",
                    format!("{requested} channels requested; at most {max} per connection (max_channels)"),
                    max,
                ));
            }
        }
    }
    Ok(channels)
}

/// Checks event names against the schema: 400 `unknown_event` naming the known ones.
pub(crate) fn check_events<'a>(
    rt: &Tidings,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<HashSet<String>, ApiError> {
    let mut set = HashSet::new();
    for name in names {
        if !rt.registry().contains(name) {
            return Err(ApiError::bad_request(
                "unknown_event",
                format!(
                    "unknown event {:?} in events; known events: {}",
                    name.chars().take(64).collect::<String>(),
                    rt.registry().event_names().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        set.insert(name.to_string());
    }
    Ok(set)
}

/// `events=` and `filter=` of a stream or history read, checked against the schema.
fn selection(
    rt: &Tidings,
    query: &[(String, String)],
) -> Result<(Option<HashSet<String>>, Option<crate::filter::Filter>), ApiError> {
    let events = match one(query, "events")? {
        None | Some("") => None,
        Some(list) => Some(check_events(rt, list.split(','))?),
    };
    let filter = match one(query, "filter")? {
        None | Some("") => None,
        Some(text) => Some(check_filter(rt, text, events.as_ref())?),
    };
    Ok((events, filter))
}

/// Reads a client's filter and checks it against the events it may see (`events`, or every
/// event of the schema).
pub(crate) fn check_filter(
    rt: &Tidings,
    text: &str,
    events: Option<&HashSet<String>>,
) -> Result<crate::filter::Filter, ApiError> {
    let filter = crate::filter::Filter::parse_str(text)?;
    let names: Vec<&str> = match events {
        Some(set) => rt.registry().event_names().filter(|n| set.contains(*n)).collect(),
        None => rt.registry().event_names().collect(),
    };
    filter.check(rt.registry(), &names)?;
    Ok(filter)
}

/// The filter a credential imposes, joined to the client's own: a client cannot widen it.
pub(crate) fn enforce_filter(
    identity: &Identity,
    own: Option<crate::filter::Filter>,
) -> Result<Option<crate::filter::Filter>, ApiError> {
    let Some(imposed) = &identity.filter else {
        return Ok(own);
    };
    let imposed = crate::filter::Filter::parse(imposed).map_err(|e| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!("the credential's filter is not a filter: {e}"),
        )
    })?;
    Ok(Some(match own {
        Some(own) => imposed.and(own),
        None => imposed,
    }))
}

/// Subscribes a checked SSE request and returns the task that streams it into `sink`; on error
/// the sink comes back with it, so the caller can still answer.
pub(crate) async fn open_stream<S: Sink>(
    rt: &Tidings,
    req: StreamRequest,
    identity: Identity,
    sink: S,
    hold: Option<crate::server::OpenGuard>,
) -> Result<impl Future<Output = ()> + Send + 'static, (ApiError, S)> {
    if rt.is_closed() {
        let e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this node is shutting down; reconnect (to another node) with your cursor",
        )
        .retry_after_secs(1);
        return Err((e, sink));
    }
    // Counted from here until the stream's task ends.
    let permit = match rt.inner.connections.acquire(identity.sub.as_deref()) {
        Ok(permit) => permit,
        Err(refused) => return Err((refused.into(), sink)),
    };
    let expires_at = identity.expires_at;
    let mut req = req;
    req.filter = match enforce_filter(&identity, req.filter.take()) {
        Ok(filter) => filter,
        Err(e) => return Err((e, sink)),
    };
    let svc = &rt.inner.presence;
    let with_presence: Vec<Channel> = req.channels.iter().filter(|c| svc.enabled(c)).cloned().collect();
    let mut presence = None;
    if !with_presence.is_empty() || req.presence.is_some() {
        let connection = format!("{:016x}", rand::random::<u64>());
        let mut part = crate::session::SessionPresence::new(svc, &connection);
        if let Some(data) = &req.presence {
            if with_presence.is_empty() {
                let e = crate::presence::PresenceError::disabled(&req.channels[0], &rt.inner.config.presence);
                return Err((e.into(), sink));
            }
            for channel in &with_presence {
                // Dropping `part` on a refusal leaves the channels joined so far.
                // Boxed: a cold path, kept out of every stream's future.
                if let Err(e) = Box::pin(svc.join(channel, &identity, &part.conn, data.as_ref())).await {
                    return Err((e.into(), sink));
                }
                part.joined(channel.clone());
            }
        }
        presence = Some(Box::new((svc.clone(), with_presence.clone(), part)));
    }
    let mut hub_channels = req.channels.clone();
    hub_channels.extend(with_presence.iter().map(Channel::presence));
    // The hub tests what the stream wants before it queues an entry for it.
    let want = crate::session::Want::new(req.events.take(), req.filter.take());
    // Boxed: its state would otherwise sit in every connection's future, idle ones too.
    let sub = match Box::pin(rt.inner.hub.subscribe(&hub_channels, &want)).await {
        Ok(sub) => sub,
        Err(e) => return Err((ApiError::store(e), sink)),
    };
    let settings = StreamSettings {
        want,
        heartbeat: rt.inner.config.heartbeat,
        write_timeout: rt.inner.config.write_timeout,
        retry: rt.inner.config.retry,
        closing: rt.inner.closing.subscribe(),
        // A deadline too far off for the clock to hold is no deadline.
        deadline: expires_at.and_then(|at| {
            let left = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now().checked_add(left)
        }),
        permit,
        presence,
        hold,
    };
    Ok(crate::sse::run(rt.store().clone(), req, sub, settings, sink))
}

/// `GET /presence?channel=`: who is on a channel with presence, as subscribers get it first.
async fn presence(
    State(rt): State<Tidings>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<crate::PresenceSnapshot>, ApiError> {
    let query = parse_query(raw.as_deref());
    known_keys(&query, &["channel", "token"])?;
    let name = one(&query, "channel")?
        .ok_or_else(|| ApiError::bad_request("invalid_channel", "no channel given; add ?channel=<name>"))?;
    let channel = rt.parse_channel(name).map_err(ApiError::channel)?;
    if !rt.inner.presence.enabled(&channel) {
        let e = crate::presence::PresenceError::disabled(&channel, &rt.inner.config.presence);
        return Err(e.into());
    }
    authorize_read(
        &rt.inner.config,
        &AuthRequest::new(headers, raw.clone()),
        std::slice::from_ref(&channel),
    )
    .await?;
    Ok(Json(rt.presence(&channel).await.map_err(ApiError::store)?))
}

/// `GET /history?channel=`: stored entries, newest first page or paged by `before`/`after`,
/// through the same `events` and `filter` as a subscription (and the filter a credential imposes).
async fn history(
    State(rt): State<Tidings>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = parse_query(raw.as_deref());
    known_keys(
        &query,
        &["channel", "limit", "after", "before", "token", "events", "filter"],
    )?;
    let name = one(&query, "channel")?
        .ok_or_else(|| ApiError::bad_request("invalid_channel", "no channel given; add ?channel=<name>"))?;
    let channel = rt.parse_channel(name).map_err(ApiError::channel)?;
    let (events, filter) = selection(&rt, &query)?;
    let identity = authorize_read(
        &rt.inner.config,
        &AuthRequest::new(headers, raw.clone()),
        std::slice::from_ref(&channel),
    )
    .await?;
    // History shows a credential no more than its subscriptions would.
    let filter = enforce_filter(&identity, filter)?;
    let want = crate::session::Want::new(events, filter);
    let max = rt.inner.config.limits.max_history;
    let limit = match one(&query, "limit")? {
        None => 100.min(max),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(max),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_limit",
                    format!(
                        "limit must be a whole number from 1 to {max} (larger values are capped to {max})"
                    ),
                ))
            }
        },
    };
    let position = |key: &str| -> Result<Option<Position>, ApiError> {
        one(&query, key)?
            .map(|t| {
                t.parse::<Position>().map_err(|e| {
                    ApiError::bad_request(
                        "invalid_id",
                        format!("{key}: {e}; give an id (ms-seq) or a position (ms-seq@epoch) as /history or a cursor wrote it"),
                    )
                })
            })
            .transpose()
    };
    let from = match (position("after")?, position("before")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give after or before, not both",
            ));
        }
        // Paging forward is a resume: it says when history after `after` is gone.
        (Some(after), None) => Scan::Forward(after),
        (None, before) => Scan::Back(before.map(|b| b.id)),
    };
    let (page, trimmed) = rt
        .channel(channel.as_str())
        .scan(from, limit, want.as_deref())
        .await?;
    let reset = trimmed.map(|t| {
        json!({
            "oldest": t.oldest,
            "from": Position::written(t.resume_from, page.epoch).to_string(),
            "reason": t.reason.as_str(),
        })
    });
    Ok(Json(json!({
        "channel": channel,
        "epoch": page.epoch.map(|e| e.to_string()),
        "entries": page.entries,
        "next": page.next.map(|id| Position::written(id, page.epoch).to_string()),
        "reset": reset,
    })))
}
