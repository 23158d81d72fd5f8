// Client-side helpers: both transports, a transport wrapper that records what it does, and a
// collector of delivered events.
import { EventSource } from "eventsource";
import { WebSocket as NodeWebSocket } from "ws";
import {
  eventSourceTransport,
  fetchTransport,
  webSocketTransport,
  type ClientOptions,
  type Connection,
  type EventSourceConstructor,
  type Frame,
  type ResetInfo,
  type Status,
  type TidingsError,
  type Transport,
  type WebSocketConstructor,
} from "../../src/index.js";
import { createClient, type Client, type Envelope } from "../generated/index.js";

export type Kind = "fetch" | "eventsource" | "websocket";
export const KINDS: readonly Kind[] = ["fetch", "eventsource", "websocket"];

export const NodeEventSource: EventSourceConstructor = EventSource;
/** The `ws` package's WebSocket (Node 20 has none built in): a client we did not write. */
export const WebSocketImpl = NodeWebSocket as unknown as WebSocketConstructor;

/** The real transport of `kind`. */
export function realTransport(kind: Kind): Transport {
  if (kind === "websocket") return webSocketTransport(WebSocketImpl);
  return kind === "fetch" ? fetchTransport(globalThis.fetch.bind(globalThis)) : eventSourceTransport(NodeEventSource);
}

/** A channel name nobody else uses. */
export function uniqueChannel(prefix: string): string {
  return `${prefix}:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

/** Polls `cond` until true; fails with `what` (and `detail()`) after `timeout` ms. */
export async function waitFor(cond: () => boolean, what: string, timeout = 5000, detail?: () => string): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}${detail ? `: ${detail()}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The `cursor` query parameter of a /realtime URL, decoded ("" when absent). */
export function cursorOf(url: string): string {
  return new URL(url, "http://x").searchParams.get("cursor") ?? "";
}

/** The `channel` query parameters of a /realtime URL. */
export function channelsOf(url: string): string[] {
  return new URL(url, "http://x").searchParams.getAll("channel");
}

/**
 * Wraps a transport: records each connection's URL, listened-for event names and frames, and lets
 * a test rewrite the URL of the next connection or tamper with frames.
 */
export class RecordingTransport {
  readonly urls: string[] = [];
  /** The `eventNames` each connection was opened with (index as in `urls`). */
  readonly eventNames: (readonly string[])[] = [];
  /** Every frame received, per connection (index as in `urls`). */
  readonly frames: Frame[][] = [];
  closes = 0;
  /** Applied to the next connection's URL, then cleared. */
  rewriteNext: ((url: string) => string) | undefined;
  /** Called for each frame; returns the frames to hand to the client instead. */
  tamper: ((frame: Frame) => Frame[]) | undefined;
  readonly transport: Transport;

  constructor(inner: Transport) {
    const transport: Transport = (url, options, handlers) => {
      const rewrite = this.rewriteNext;
      this.rewriteNext = undefined;
      const actual = rewrite ? rewrite(url) : url;
      this.urls.push(actual);
      this.eventNames.push(options.eventNames);
      const frames: Frame[] = [];
      this.frames.push(frames);
      const conn: Connection = inner(actual, options, {
        onOpen: () => handlers.onOpen(),
        onError: (e) => handlers.onError(e),
        onFrame: (frame) => {
          frames.push(frame);
          const out = this.tamper ? this.tamper(frame) : [frame];
          for (const f of out) handlers.onFrame(f);
        },
      });
      const recorded: Connection = {
        close: () => {
          this.closes += 1;
          conn.close();
        },
      };
      if (conn.send) recorded.send = conn.send.bind(conn);
      return recorded;
    };
    // A wrapper of EventSource still only sees the events it names; one of WebSocket can send.
    this.transport = Object.assign(transport, {
      ...(inner.namedEventsOnly ? { namedEventsOnly: true } : {}),
      ...(inner.canSend ? { canSend: true } : {}),
    });
  }

  get connections(): number {
    return this.urls.length;
  }

  get lastUrl(): string {
    return this.urls[this.urls.length - 1] ?? "";
  }
}

/**
 * A client of the real server through `url` (the generated `createClient`, so it knows the test
 * schema's event names), with short backoff so tests reconnect fast.
 */
export function makeClient(
  kind: Kind,
  url: string,
  extra: Partial<ClientOptions> = {},
): { client: Client; rec: RecordingTransport; statuses: Status[]; errors: TidingsError[] } {
  const rec = new RecordingTransport(realTransport(kind));
  const client = createClient({
    url,
    transport: rec.transport,
    backoff: { initialMs: 30, maxMs: 150 },
    ...extra,
  });
  const statuses: Status[] = [];
  const errors: TidingsError[] = [];
  client.onStatus((status, error) => {
    statuses.push(status);
    if (error) errors.push(error);
  });
  return { client, rec, statuses, errors };
}

/** Everything one subscription received. */
export class Collector {
  readonly envelopes: Envelope[] = [];
  readonly resets: ResetInfo[] = [];
  /** Deliveries and resets in the order they happened. */
  readonly log: string[] = [];
  readonly unsubscribe: () => void;

  constructor(client: Client, channels: readonly string[]) {
    this.unsubscribe = client.subscribe({
      channels,
      onData: (e) => {
        this.envelopes.push(e);
        this.log.push(`data ${e.channel} ${e.id}`);
      },
      onReset: (info) => {
        this.resets.push(info);
        this.log.push(`reset ${info.channel} ${info.oldest ?? "null"}`);
      },
    });
  }

  ids(channel: string): string[] {
    return this.envelopes.filter((e) => e.channel === channel).map((e) => e.id);
  }

  count(channel?: string): number {
    return channel === undefined ? this.envelopes.length : this.ids(channel).length;
  }
}

/** Asserts nothing repeats in `ids`. */
export function duplicates(ids: readonly string[]): string[] {
  const seen = new Set<string>();
  const dup: string[] = [];
  for (const id of ids) {
    if (seen.has(id)) dup.push(id);
    seen.add(id);
  }
  return dup;
}
