// How bytes arrive: the browser's EventSource, or fetch with a streaming body. Everything that
// differs between browsers and Node lives in this file.
import { createParser } from "eventsource-parser";
import { TidingsError } from "./errors.js";

/** One SSE frame. */
export interface Frame {
  event: string;
  data: string;
  id: string | undefined;
}

/** Callbacks a transport reports to. `onError` ends the connection: the client reconnects. */
export interface TransportHandlers {
  onOpen(): void;
  onFrame(frame: Frame): void;
  onError(error: TidingsError): void;
}

/** An open connection. */
export interface Connection {
  close(): void;
  /**
   * Sends a request to the server on this connection (the WebSocket transport only): `false`
   * when it cannot be sent now. Answers arrive as frames (`tidings.emitted`, `tidings.error`)
   * carrying the request's `ref`.
   */
  send?(message: Record<string, unknown>): boolean;
}

/** Options a transport receives for one connection. */
export interface ConnectOptions {
  /**
   * Event names to listen for, the control events (`tidings.ready`, …) included. A transport that
   * sees every frame (fetch) may ignore it; EventSource only dispatches named events to listeners
   * registered per name.
   */
  eventNames: readonly string[];
  /** Headers to send; they include `Authorization: Bearer <token>` when a token is given. */
  headers: Record<string, string>;
  withCredentials: boolean;
  /**
   * The credential of the client's `token` option for this connection. It is already in
   * `headers`; a transport that cannot send headers (EventSource) sends it as the `token` query
   * parameter instead.
   */
  token?: string;
}

/** Opens one SSE connection. */
export interface Transport {
  (url: string, options: ConnectOptions, handlers: TransportHandlers): Connection;
  /**
   * True when the transport only receives the events named in {@link ConnectOptions.eventNames}
   * (as {@link eventSourceTransport}): a client without `eventNames` then refuses subscriptions
   * that do not name their `events`, rather than never delivering them. A wrapper around such a
   * transport should copy it.
   */
  readonly namedEventsOnly?: boolean;
  /**
   * True when its connections can send requests ({@link Connection.send}), as
   * {@link webSocketTransport}'s: what presence joins need. A wrapper should copy it.
   */
  readonly canSend?: boolean;
}

/** The minimal EventSource surface used, so Node polyfills and the browser's both fit. */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((this: EventSourceLike, ev: Event) => unknown) | null;
  onerror: ((this: EventSourceLike, ev: Event) => unknown) | null;
  addEventListener(type: string, listener: (ev: MessageEvent) => void): void;
  close(): void;
}

/** A constructor of EventSource objects. */
export type EventSourceConstructor = new (url: string, init?: { withCredentials?: boolean }) => EventSourceLike;

/**
 * The browser's EventSource. It cannot send headers: authenticate with cookies
 * (`withCredentials`), or it sends `options.token` as the `token` query parameter (which may end
 * up in access logs: prefer the fetch transport or a cookie). The client closes it on the first
 * error and reconnects itself, with backoff and its own cursor, instead of the browser's fixed
 * retry.
 *
 * It only sees the events it listens for by name (`eventNames`), so it is marked
 * {@link Transport.namedEventsOnly}.
 *
 * Browsers do not tell an EventSource why a stream was refused, so a 401 or 403 is an error
 * without a `status` there (and is retried with backoff); implementations that report the HTTP
 * status on the error event (`code`, as the `eventsource` package for Node does) give the
 * error its status.
 *
 * Nor can it read a `Retry-After` header: a stream refused because the node is full (503
 * `node_full`) or the identity holds too many streams (429 `too_many_connections`) gives an error
 * without `retryAfter`, and the client retries with its plain backoff. Use the fetch transport to
 * honour the server's `Retry-After`.
 */
export function eventSourceTransport(EventSourceImpl: EventSourceConstructor): Transport {
  const transport: Transport = (url, options, handlers) => {
    const target = options.token ? withQuery(url, "token", options.token) : url;
    const source = new EventSourceImpl(target, { withCredentials: options.withCredentials });
    let closed = false;
    const stop = () => {
      closed = true;
      source.close();
    };
    source.onopen = () => {
      if (!closed) handlers.onOpen();
    };
    source.onerror = (ev) => {
      if (closed) return;
      stop();
      // Not in the standard: Node's `eventsource` package puts the HTTP status on the event.
      const code = (ev as { code?: unknown } | undefined)?.code;
      const status = typeof code === "number" && code >= 100 && code < 600 ? code : undefined;
      handlers.onError(
        status === undefined
          ? new TidingsError("the event stream failed or was closed by the server")
          : new TidingsError(`the server refused the event stream: ${status}`, { status }),
      );
    };
    const forward = (name: string) => (ev: MessageEvent) => {
      if (closed) return;
      handlers.onFrame({ event: name, data: String(ev.data), id: ev.lastEventId || undefined });
    };
    for (const name of options.eventNames) source.addEventListener(name, forward(name));
    return { close: stop };
  };
  return Object.assign(transport, { namedEventsOnly: true });
}

/**
 * fetch with a streaming body, parsed by eventsource-parser: it sees every frame, so it needs no
 * event names, and it sends headers (`Authorization`),
 * and reports the server's HTTP error when the stream is refused: its status, the `code` of its
 * JSON body, and its `Retry-After` header as `retryAfter` (seconds), which the client waits out
 * before reconnecting.
 */
export function fetchTransport(fetchImpl: typeof fetch): Transport {
  return (url, options, handlers) => {
    const abort = new AbortController();
    let closed = false;
    const fail = (error: TidingsError) => {
      if (closed) return;
      closed = true;
      abort.abort();
      handlers.onError(error);
    };
    void (async () => {
      let response: Response;
      try {
        response = await fetchImpl(url, {
          headers: { accept: "text/event-stream", ...options.headers },
          credentials: options.withCredentials ? "include" : "same-origin",
          cache: "no-store",
          signal: abort.signal,
        });
      } catch (cause) {
        fail(new TidingsError("cannot reach the server", { cause }));
        return;
      }
      if (!response.ok) {
        fail(await TidingsError.fromResponse(response));
        return;
      }
      if (!response.body || !(response.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
        fail(new TidingsError("the server did not answer with an event stream", { status: response.status }));
        return;
      }
      if (closed) return;
      handlers.onOpen();
      const parser = createParser({
        onEvent(ev) {
          if (!closed) handlers.onFrame({ event: ev.event ?? "message", data: ev.data, id: ev.id });
        },
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          parser.feed(value);
        }
        fail(new TidingsError("the server ended the event stream"));
      } catch (cause) {
        fail(new TidingsError("the event stream broke", { cause }));
      }
    })();
    return {
      close() {
        closed = true;
        abort.abort();
      },
    };
  };
}

/** The minimal WebSocket surface used, so the browser's and Node's (or the `ws` package's) fit. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: never) => unknown) | null;
  onmessage: ((ev: { data: unknown }) => unknown) | null;
  onclose: ((ev: { code: number; reason: string }) => unknown) | null;
  onerror: ((ev: never) => unknown) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A constructor of WebSocket objects. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

// What the server's close codes mean to the client (see the README's WebSocket section).
const CLOSE_STATUS: Record<number, { status: number; code: string }> = {
  4001: { status: 401, code: "unauthenticated" },
  4003: { status: 403, code: "forbidden" },
  1013: { status: 503, code: "node_full" },
  1009: { status: 413, code: "message_too_large" },
};

/**
 * WebSocket (`GET /ws`): one socket that carries the subscription's frames, and
 * {@link Client.emit} requests. The client drives it exactly as a stream: the channels, events
 * and cursor of the `/realtime` URL it is given are sent as a `subscribe` message, and the
 * server's frames are handed on under their SSE names (`tidings.ready`, …, events with the
 * cursor as `id`), so resume, reset, heartbeats and backoff work the same.
 *
 * A browser's WebSocket cannot send headers: the client's `token` goes in the `token` query
 * parameter, and cookies go with the handshake when the page's origin may (the server checks
 * the Origin). A refusal arrives as an `error` frame and a close code: 4001 is a 401, 4003 a
 * 403, 1013 a 503 (the node is full).
 */
export function webSocketTransport(WebSocketImpl: WebSocketConstructor): Transport {
  const transport: Transport = (url, options, handlers) => {
    const { target, subscribe } = wsRequest(url, options.token);
    const socket = new WebSocketImpl(target);
    let closed = false;
    let open = false;
    // An `error` frame without a ref comes just before the server closes: its body says why.
    let refusal: TidingsError | undefined;
    const fail = (error: TidingsError) => {
      if (closed) return;
      closed = true;
      try {
        socket.close(1000);
      } catch {
        // already closing
      }
      handlers.onError(error);
    };
    socket.onopen = () => {
      if (closed) return;
      open = true;
      handlers.onOpen();
      socket.send(JSON.stringify(subscribe));
    };
    socket.onmessage = (ev) => {
      if (closed) return;
      const msg = parseObject(String(ev.data));
      if (msg === undefined) return;
      const { type, ref, ...rest } = msg;
      const cursor = typeof rest["cursor"] === "string" ? rest["cursor"] : undefined;
      switch (type) {
        case "event": {
          const { cursor: _, ...envelope } = rest;
          handlers.onFrame({ event: String(envelope["event"]), data: JSON.stringify(envelope), id: cursor });
          return;
        }
        case "ready":
        case "reset":
        case "lagged":
        case "expired":
        case "ping":
          handlers.onFrame({ event: `tidings.${type}`, data: JSON.stringify(rest), id: cursor });
          return;
        case "presence.snapshot":
        case "presence.join":
        case "presence.leave":
          handlers.onFrame({ event: `tidings.${type}`, data: JSON.stringify(rest), id: undefined });
          return;
        case "emitted":
          handlers.onFrame({ event: "tidings.emitted", data: JSON.stringify({ ref, ...rest }), id: undefined });
          return;
        case "error": {
          const error = TidingsError.fromBody(rest);
          if (ref === SUBSCRIBE_REF) fail(error); // the subscription was refused, as a stream is
          else if (ref === undefined) refusal = error;
          else handlers.onFrame({ event: "tidings.error", data: JSON.stringify({ ref, ...rest }), id: undefined });
          return;
        }
        default:
          return; // welcome, subscribed, pong, presence.joined, presence.left
      }
    };
    socket.onclose = (ev) => {
      if (closed) return;
      const known = CLOSE_STATUS[ev.code];
      const why = ev.reason ? `: ${ev.reason}` : "";
      fail(
        refusal ??
          (known
            ? new TidingsError(`the server closed the WebSocket (${ev.code})${why}`, known)
            : new TidingsError(
                open ? `the WebSocket closed (${ev.code})${why}` : "cannot reach the server (the WebSocket did not open)",
              )),
      );
    };
    socket.onerror = () => {
      // A close event follows, with the code.
    };
    return {
      close() {
        closed = true;
        try {
          socket.close(1000);
        } catch {
          // already closing
        }
      },
      send(message) {
        if (closed || !open || socket.readyState !== 1) return false;
        socket.send(JSON.stringify(message));
        return true;
      },
    };
  };
  return Object.assign(transport, { canSend: true });
}

const SUBSCRIBE_REF = "tidings:subscribe";

/** The `/ws` URL for a `/realtime` URL, and the subscribe message its query asks for. */
function wsRequest(url: string, token: string | undefined): { target: string; subscribe: Record<string, unknown> } {
  const origin = (globalThis as { location?: { href?: string } }).location?.href ?? "http://localhost/";
  const parsed = new URL(url, origin);
  const channels = parsed.searchParams.getAll("channel");
  const events = parsed.searchParams.get("events");
  const cursor = parsed.searchParams.get("cursor");
  const filter = parsed.searchParams.get("filter");
  parsed.pathname = parsed.pathname.replace(/\/realtime$/, "/ws");
  parsed.search = "";
  if (token) parsed.searchParams.set("token", token);
  parsed.protocol = parsed.protocol === "https:" ? "wss:" : "ws:";
  const subscribe: Record<string, unknown> = { type: "subscribe", ref: SUBSCRIBE_REF, channels };
  if (events) subscribe["events"] = events.split(",");
  if (cursor) subscribe["cursor"] = cursor;
  if (filter) subscribe["filter"] = JSON.parse(filter) as unknown;
  return { target: parsed.toString(), subscribe };
}

function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** `url` with `name=value` appended to its query (a relative URL stays relative). */
function withQuery(url: string, name: string, value: string): string {
  const hash = url.indexOf("#");
  const head = hash >= 0 ? url.slice(0, hash) : url;
  const tail = hash >= 0 ? url.slice(hash) : "";
  const sep = !head.includes("?") ? "?" : head.endsWith("?") || head.endsWith("&") ? "" : "&";
  return `${head}${sep}${encodeURIComponent(name)}=${encodeURIComponent(value)}${tail}`;
}

/** What {@link watchNetwork} reports. */
export interface NetworkHandlers {
  /** The browser is online again (`online` event). */
  online(): void;
  /** A hidden page became visible again (`visibilitychange`). */
  visible(): void;
}

/**
 * Calls `handlers` on the browser's signals that a connection deserves a look: the network came
 * back, or a hidden page is visible again. Returns the function that stops it. Where there is no
 * window (Node, workers without `document`), it watches what exists and otherwise does nothing.
 */
export function watchNetwork(handlers: NetworkHandlers): () => void {
  type Target = { addEventListener(type: string, f: () => void): void; removeEventListener(type: string, f: () => void): void };
  const win = globalThis as Partial<Target> & { document?: Partial<Target> & { visibilityState?: string } };
  const stops: (() => void)[] = [];
  const on = (target: Partial<Target> | undefined, type: string, f: () => void) => {
    if (typeof target?.addEventListener !== "function" || typeof target.removeEventListener !== "function") return;
    target.addEventListener(type, f);
    stops.push(() => target.removeEventListener?.(type, f));
  };
  on(win, "online", () => handlers.online());
  on(win.document, "visibilitychange", () => {
    if (win.document?.visibilityState === "visible") handlers.visible();
  });
  return () => {
    for (const stop of stops.splice(0)) stop();
  };
}
