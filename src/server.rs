//! The standalone server: an accept loop that serves SSE streams directly on the socket and
//! hands every other request to hyper and the axum [`router`](crate::router).
//!
//! Why not hyper for the streams too: an idle SSE connection under hyper keeps its 8 KiB read
//! buffer, its 8 KiB header write buffer and a dispatcher alive for as long as the stream is
//! open, which is most of the 25 KB per connection we measured. Here a stream holds the socket,
//! its task, and a small queue; frames are written with chunked transfer encoding, as hyper
//! would. Everything else (emit, history, the pages, errors) still goes through hyper, and an
//! application that nests [`router`](crate::router) in its own server keeps the hyper path for
//! streams as well: both paths share [`prepare_stream`] and [`open_stream`], so they answer the
//! same.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::auth::{authorize_read, AuthRequest};
use crate::http::{cors_allowed, open_stream, prepare_stream, router, ApiError};
use crate::realtime::Tidings;
use crate::session::Gone;
use crate::sse::Sink;

/// The longest request head read before deciding where a connection goes: room for the longest
/// cursor in a `Last-Event-ID` header, and the rest of a browser's headers.
const MAX_HEAD: usize = crate::cursor::MAX_CURSOR_LEN + 16 * 1024;

/// Serves tidings on `listener` until `shutdown` completes; then ends open SSE streams
/// ([`Tidings::close`]) and waits for requests in flight.
///
/// # Errors
/// Never in practice: failed accepts (e.g. out of file descriptors) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    rt: Tidings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let service = TowerToHyperService::new(router(rt.clone()));
    let open = Arc::new(Open::default());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Data the peer never acknowledges (it vanished: a NAT dropped the flow, a laptop slept)
        // ends the connection after the write timeout, even while the kernel buffer still takes
        // the small heartbeat writes that would otherwise never block.
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(rt.config().write_timeout));
        let guard = Open::enter(&open);
        let (rt, service) = (rt.clone(), service.clone());
        tokio::spawn(connection(stream, rt, service, guard));
    }
    rt.close();
    open.wait_empty().await;
    Ok(())
}

/// Counts open connections so shutdown can wait for them.
#[derive(Default)]
struct Open {
    count: AtomicUsize,
    empty: Notify,
}

/// Counts a connection (or the stream it became) as open until dropped.
pub(crate) struct OpenGuard(Arc<Open>);

impl Open {
    fn enter(this: &Arc<Open>) -> OpenGuard {
        this.count.fetch_add(1, Ordering::AcqRel);
        OpenGuard(this.clone())
    }

    async fn wait_empty(&self) {
        loop {
            let notified = self.empty.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.empty.notify_waiters();
        }
    }
}

type Service = TowerToHyperService<axum::Router>;

/// Reads the request head and sends the connection down the SSE path or to hyper.
async fn connection(mut stream: TcpStream, rt: Tidings, service: Service, guard: OpenGuard) {
    let mut head = Vec::with_capacity(1024);
    let parsed = tokio::time::timeout(rt.inner.config.limits.head_timeout, async {
        loop {
            if head.len() >= MAX_HEAD {
                return Ok::<_, io::Error>(None);
            }
            let mut chunk = [0u8; 2048];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(request) = sse_request(&head) {
                return Ok(Some(request));
            }
            if head_complete(&head) {
                return Ok(None);
            }
        }
    })
    .await;
    match parsed {
        Ok(Ok(Some(request))) => {
            drop(head);
            stream_sse(stream, rt, request, guard).await;
        }
        Ok(Ok(None)) => {
            hyper_connection(stream, head, rt, service).await;
            drop(guard);
        }
        // A client that sent nothing useful in time, or went away: nothing to answer.
        Ok(Err(_)) | Err(_) => {}
    }
}

/// What the SSE path needs from a request head.
struct SseRequest {
    query: Option<String>,
    last_event_id: Option<Vec<u8>>,
    /// Every header, for the authorizer (cookies, Authorization) and CORS (Origin).
    headers: axum::http::HeaderMap,
}

/// `Some` when `head` is a complete `GET /realtime` request head (HTTP/1.1, no body).
fn sse_request(head: &[u8]) -> Option<SseRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = req.parse(head) else {
        return None;
    };
    if req.method != Some("GET") || req.version != Some(1) || len != head.len() {
        return None;
    }
    let target = req.path?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    if path != "/realtime" {
        return None;
    }
    let mut last_event_id = None;
    let mut map = axum::http::HeaderMap::new();
    for h in req.headers.iter() {
        let name = h.name;
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_bytes(h.value),
        ) {
            map.append(n, v);
        }
        if name.eq_ignore_ascii_case("last-event-id") {
            last_event_id = Some(h.value.to_vec());
        } else if name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
        {
            return None; // unusual for a stream request: let hyper answer it
        }
    }
    Some(SseRequest {
        query,
        last_event_id,
        headers: map,
    })
}

/// True once `head` holds a whole request head (or cannot be one): hand it to hyper.
fn head_complete(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    !matches!(req.parse(head), Ok(httparse::Status::Partial))
}

/// Serves one SSE stream on the socket.
async fn stream_sse(stream: TcpStream, rt: Tidings, request: SseRequest, guard: OpenGuard) {
    let (read, mut write) = stream.into_split();
    // Same-origin by default: CORS headers only for a listed Origin.
    let cors = match cors_allowed(&rt, request.headers.get(axum::http::header::ORIGIN)) {
        Some(origin) => format!(
            "access-control-allow-origin: {origin}\r\naccess-control-allow-credentials: true\r\nvary: origin\r\n"
        ),
        None if rt.inner.config.cors_origins.is_empty() => String::new(),
        None => "vary: origin\r\n".to_string(),
    };
    let prepared = prepare_stream(&rt, request.query.as_deref(), request.last_event_id.as_deref());
    let req = match prepared {
        Ok(req) => req,
        Err(e) => return write_error(&mut write, e, &cors).await,
    };
    // The authorizer runs before anything is subscribed or written.
    let auth = AuthRequest::new(request.headers, request.query);
    let identity = match authorize_read(&rt.inner.config, &auth, &req.channels).await {
        Ok(identity) => identity,
        Err(e) => return write_error(&mut write, e.into(), &cors).await,
    };
    drop(auth);
    let sink = SocketSink {
        read,
        write,
        started: false,
        cors,
    };
    match open_stream(&rt, req, identity, sink, Some(guard)).await {
        // A task of its own: this connection's future (the request head's buffers, the
        // authorizer's call) is freed, and an idle stream holds only the stream's state.
        Ok(task) => drop(tokio::spawn(task)),
        Err((e, mut sink)) => {
            let cors = std::mem::take(&mut sink.cors);
            write_error(&mut sink.write, e, &cors).await
        }
    }
}

async fn write_error(write: &mut OwnedWriteHalf, e: ApiError, cors: &str) {
    let body = e.body().to_string();
    let status = e.status();
    let retry = match e.retry_after() {
        Some(seconds) => format!("retry-after: {seconds}\r\n"),
        None => String::new(),
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}{cors}connection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = write.write_all(head.as_bytes()).await;
    let _ = write.write_all(body.as_bytes()).await;
    let _ = write.shutdown().await;
}

/// A socket written directly: the response head first, then each chunk with chunked framing.
struct SocketSink {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    started: bool,
    /// CORS header lines for the response head (empty unless the Origin is allowed).
    cors: String,
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\n";

impl Sink for SocketSink {
    async fn send(&mut self, chunk: Bytes) -> Result<(), Gone> {
        let mut framed = Vec::with_capacity(chunk.len() + 32);
        if !self.started {
            framed.extend_from_slice(SSE_HEAD);
            framed.extend_from_slice(std::mem::take(&mut self.cors).as_bytes());
            framed.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            self.started = true;
        }
        framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        self.write.write_all(&framed).await.map_err(|_| Gone)
    }

    async fn closed(&mut self) {
        // A stream client sends nothing more: any read that ends (EOF or error) means it left.
        let mut scratch = [0u8; 64];
        loop {
            match self.read.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

impl Drop for SocketSink {
    fn drop(&mut self) {
        // End the chunked body properly when the stream ends while the socket is still good.
        if self.started {
            let _ = self.write.try_write(b"0\r\n\r\n");
        }
    }
}

/// Serves the connection with hyper, replaying the bytes already read.
async fn hyper_connection(stream: TcpStream, head: Vec<u8>, rt: Tidings, service: Service) {
    let io = TokioIo::new(Rewind {
        prefix: Some(Bytes::from(head)),
        inner: stream,
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // Later requests on a kept-alive connection get the same deadline for their heads.
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(rt.inner.config.limits.head_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut closing = rt.inner.closing.subscribe();
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = closing.wait_for(|c| *c) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A stream that first yields bytes already read from it.
struct Rewind {
    prefix: Option<Bytes>,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(prefix) = self.prefix.as_mut() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix.split_to(n));
            if prefix.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle stream holds its task: one allocation the size of the stream's future, most of
    /// its memory. The connection's own future (the request head's buffer, the authorizer's
    /// call) lives only until the stream is spawned. The stream's future once doubled (to 6.6 KB
    /// in a release build) when a wrapping `async` block awaited it by value; the stream was
    /// later awaited inside the connection's future, which kept that too (4.9 KB).
    #[tokio::test]
    async fn an_idle_streams_future_stays_small() {
        let store = std::sync::Arc::new(crate::MemoryStore::default());
        let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/events/events.json");
        let config = crate::Config::default().schema(schema);
        let rt = Tidings::new(crate::Registry::load(&config.schema).unwrap(), store, config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let accept = || async {
            let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            (client, listener.accept().await.unwrap().0)
        };
        let (_client, server) = accept().await;
        let service = TowerToHyperService::new(router(rt.clone()));
        let open = Arc::new(Open::default());
        let connection = std::mem::size_of_val(&connection(server, rt.clone(), service, Open::enter(&open)));
        let (_client, server) = accept().await;
        let (read, write) = server.into_split();
        let sink = SocketSink {
            read,
            write,
            started: false,
            cors: String::new(),
        };
        let settings = crate::sse::StreamSettings {
            want: None,
            heartbeat: Duration::from_secs(15),
            write_timeout: Duration::from_secs(30),
            retry: Duration::from_secs(2),
            closing: rt.inner.closing.subscribe(),
            deadline: None,
            permit: rt.inner.connections.acquire(None).ok().unwrap(),
            presence: None,
            hold: None,
        };
        let req = prepare_stream(&rt, Some("channel=a"), None).ok().unwrap();
        let stream = crate::sse::run(rt.store().clone(), req, rt.inner.hub.subscriber(), settings, sink);
        let stream = std::mem::size_of_val(&stream);
        // 1.9 KB and 4.2 KB in a release build, a little more in a debug one.
        assert!(stream <= 2560, "the stream's future is {stream} bytes");
        assert!(
            connection <= 5 * 1024,
            "the connection's future is {connection} bytes"
        );
    }

    #[test]
    fn recognises_stream_requests_only() {
        let r = sse_request(b"GET /realtime?channel=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: a=1-0\r\n\r\n")
            .unwrap();
        assert_eq!(r.query.as_deref(), Some("channel=a"));
        assert_eq!(r.last_event_id.as_deref(), Some(&b"a=1-0"[..]));
        assert!(sse_request(b"GET /realtime HTTP/1.1\r\nHost: x\r\n\r\n").is_some());
        for other in [
            &b"GET /history?channel=a HTTP/1.1\r\n\r\n"[..],
            b"POST /realtime HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
            b"GET /realtime HTTP/1.0\r\n\r\n",
            b"GET /realtime HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /realtime HTTP/1.1\r\nHost: x\r\n",
            b"GET /realtime HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(sse_request(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost"));
        assert!(head_complete(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(head_complete(b"\x00\x01garbage\r\n\r\n"));
    }
}
