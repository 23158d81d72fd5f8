// The framework-free core: one shared SSE connection for every channel the app watches.
import { compareIds, formatCursor, parseCursor } from "./cursor.js";
import { TidingsError } from "./errors.js";
import { matchesFilter, type Filter } from "./filter.js";
import {
  eventSourceTransport,
  fetchTransport,
  type Connection,
  type EventSourceConstructor,
  type Frame,
  type Transport,
  type WebSocketConstructor,
  watchNetwork,
  webSocketTransport,
} from "./transport.js";
import type { Envelope, EventMap, EventName } from "./types.js";

/** Connection state, as the UI shows it. */
export type Status = "connecting" | "connected" | "disconnected" | "error";

/** Reconnect delays: `initialMs · factor^attempt`, capped at `maxMs`, minus up to `jitter` of it. */
export interface Backoff {
  initialMs: number;
  maxMs: number;
  factor: number;
  /** Fraction (0–1) of each delay that is random, so clients do not reconnect in lockstep. */
  jitter: number;
}

/** The default backoff: 0.5 s, doubling, capped at 30 s, half of it random. */
export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.5 };

/** What a `tidings.reset` frame says: history after the cursor is gone. */
export interface ResetInfo {
  channel: string;
  /** The oldest id the channel still holds, or null when it holds none. */
  oldest: string | null;
  /**
   * Why, as the server says: `"trimmed"` (capped or expired history), `"replaced"` (the history
   * was lost and started again: a store restarted without persistence, a deleted key), `"ahead"`
   * (the cursor is past the newest entry), or undefined from servers that do not say.
   */
  reason?: string;
}

/**
 * Why the client asks its `token` function for a credential:
 * - `"connect"`: before a connection (the first, after a drop, or after the channels changed);
 * - `"expired"`: the stream's token expired (`tidings.expired`); a cached token is stale;
 * - `"unauthenticated"`: the server refused the last token with a 401; a cached token is stale;
 * - `"history"`: before a {@link Client.history} read.
 */
export type TokenReason = "connect" | "expired" | "unauthenticated" | "history";

/**
 * Returns the token to send now; `null`, `undefined` or `""` sends none. It may return a cached
 * token, but should fetch a new one when `reason` is `"expired"` or `"unauthenticated"`.
 */
export type TokenFunction = (context: { reason: TokenReason }) =>
  | string
  | null
  | undefined
  | Promise<string | null | undefined>;

/** Options of {@link createClient}. */
export interface ClientOptions {
  /** Where tidings is served: `""` (same origin), `"/rt"`, or `"https://rt.example.com"`. */
  url: string;
  /**
   * `"eventsource"` (default where `EventSource` exists; cookies only), `"fetch"` (sends
   * `headers`, e.g. `Authorization`), `"websocket"` (`GET /ws`; the token as `?token=`, and
   * {@link Client.emit} over the same socket), or a custom transport. All give the same
   * exactly-once delivery, resets, heartbeats and backoff.
   */
  transport?: "eventsource" | "fetch" | "websocket" | Transport;
  /** Headers for the fetch transport and for `history()`; a function is called per request. */
  headers?: Record<string, string> | (() => Record<string, string> | Promise<Record<string, string>>);
  /**
   * A bearer token (a JWT, for tidings' `--jwt-secret`) for the stream and for `history()`, or a
   * function that returns one, called before every connection and reconnection and every history
   * read, so an app can hand out a fresh token before the old one expires.
   *
   * The fetch transport and `history()` send it as `Authorization: Bearer <token>` (replacing any
   * `Authorization` of `headers`). EventSource cannot send headers, so the EventSource transport
   * sends it as the `token` query parameter: URLs, and so query tokens, may end up in access logs,
   * proxy logs and browser history. Prefer `transport: "fetch"`, or the `tidings_token` cookie
   * (set by your server, sent by EventSource with `withCredentials`).
   *
   * When the stream's token expires (`tidings.expired`), the client reconnects at once from its
   * cursor, with the token it gets then: no event is lost or repeated. A 401 is retried with
   * backoff, after asking the function again, when `token` (or, without `token`, `headers`) is a
   * function; with a fixed string, or no credential at all, a 401 is final: `status` becomes
   * `"error"` with `error.status` 401 and `error.permanent` true, and the client waits for the
   * subscriptions to change. A 403 (the token does not allow a channel) is always final.
   * Browsers do not report the status of a refused EventSource, so there every refusal is an
   * error without `status`, retried with backoff.
   */
  token?: string | TokenFunction;
  /** Send cookies cross-origin. */
  withCredentials?: boolean;
  /**
   * Reconnect delays. When the server refuses a stream with a `Retry-After` header (503
   * `node_full`, 429 `too_many_connections`), the next attempt waits at least that long, even if
   * the subscriptions change meanwhile; see {@link TidingsError.retryAfter} (fetch transport only:
   * an EventSource cannot see the header).
   */
  backoff?: Partial<Backoff>;
  /** Give up after this many failed attempts in a row (default: never). */
  maxAttempts?: number;
  /** An EventSource implementation (Node has none built in). */
  EventSource?: EventSourceConstructor;
  /** A fetch implementation. */
  fetch?: typeof fetch;
  /** A WebSocket implementation for `transport: "websocket"` (Node 20 has none built in: `ws`). */
  WebSocket?: WebSocketConstructor;
  /**
   * Every event name of the app's schema. The generated `createClient` passes them; without them,
   * the client listens for the events its subscriptions name. That matters to the EventSource
   * transport only, which receives just the events it listens for by name: there, subscribing
   * without `events` to a client created without `eventNames` throws a {@link TidingsError}.
   * The fetch transport sees every frame and needs no names.
   */
  eventNames?: readonly string[];
  /** Random numbers in [0, 1) for jitter (tests pass a fixed one). */
  random?: () => number;
}

/**
 * What to subscribe to: `M` is the app's {@link EventMap}, `E` the events wanted (all of `M` by
 * default), which types the envelopes `onData` receives.
 */
export interface SubscribeOptions<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>> {
  channels: readonly string[];
  /**
   * Only these events; default all. Required on the EventSource transport when the client was
   * created without `eventNames` (see {@link ClientOptions.eventNames}).
   */
  events?: readonly E[];
  /**
   * Only events whose payload passes this filter, typed by the payloads of `E` (a wrong path or
   * value type is a compile error); see the README's "Filters". The server applies it (and
   * checks it against the schema: a refusal is a permanent 400 error), so what it leaves out
   * never travels.
   */
  filter?: Filter<M[E], E>;
  /** Called once per event, in order per channel, never twice for the same (channel, id). */
  onData: (envelope: Envelope<M, E>) => void;
  /** History after the cursor of `channel` was trimmed: reload that channel's state. */
  onReset?: (info: ResetInfo) => void;
  /**
   * Called once, when the server has confirmed a connection that covers this subscription (all
   * its channels, and its events): every event emitted from then on reaches `onData`. Emit after
   * it to be sure an event is seen. When the subscription joins a connection that is ready and
   * covers it already, it is called soon after `subscribe` returns (a microtask). Not called
   * again after a reconnect, nor ever after the subscription ends.
   */
  onReady?: () => void;
}

/** Options of {@link Client.history}: `E` the events wanted (all of `M` by default). */
export interface HistoryOptions<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>> {
  /** At most this many (the server caps it, 1000 by default); with a filter, this many that pass. */
  limit?: number;
  /** Entries after this id (paging forward), or a page's `next` going forward. */
  after?: string;
  /** Entries before this id (paging back), or a page's `next` going back. */
  before?: string;
  /** Only these events; default all. */
  events?: readonly E[];
  /** Only entries whose payload passes, typed as {@link SubscribeOptions.filter}; the server applies it. */
  filter?: Filter<M[E], E>;
}

/** One read of {@link Client.historyPage}. */
export interface HistoryPage<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>> {
  /** The entries, oldest first. */
  entries: Envelope<M, E>[];
  /**
   * Where to read on in the same direction (as `before` paging back, `after` paging forward), or
   * `null` at the end of history. Set whenever there may be more: `limit` entries were found, or
   * the server looked at as many as one read may (a rare filter) before finding them.
   */
  next: string | null;
  /** Paging forward (`after`): history after `after` is gone, and the page starts at `from`. */
  reset: { oldest: string | null; from: string; reason: ResetInfo["reason"] } | null;
}

/** Options of {@link Client.emit}. */
export interface EmitOptions {
  /**
   * Stores the event once however often it is sent with this key (within the server's
   * `--idempotency-window`): retry an emit whose answer was lost with the same key.
   */
  idempotencyKey?: string;
  /** Reject when no answer arrives within this many ms (default 10 000). */
  timeoutMs?: number;
}

/** What the server answered to an emit. */
export interface Emitted {
  /** The event's id in its channel. */
  id: string;
  /** True when the idempotency key was seen before: `id` is the first emit's. */
  duplicate: boolean;
}

/** One member of a channel's presence (`D`: the data members join with). */
export interface Member<D = unknown> {
  /** The member: its token's `sub`, or `anon:…` for an anonymous connection. */
  id: string;
  sub: string | null;
  /** A display name (the token's `name` claim). */
  name: string | null;
  /** What the member joined with (`null`: nothing). */
  data: D | null;
}

/** Options of {@link Client.presence}. */
export interface PresenceOptions<D = unknown> {
  /**
   * Join the channel's presence as this client's identity: `true`, or the data to show others
   * (at most the server's `--max-presence-data-bytes` as JSON). WebSocket transport only.
   */
  join?: true | D;
  /** Called with every member on each change, in id order; once the snapshot arrives first. */
  onChange?: (members: readonly Member<D>[], count: number) => void;
}

/** A tidings client; `M` is the app's {@link EventMap}, which types what it delivers. */
export interface Client<M extends EventMap = EventMap> {
  /** The connection's state now. */
  readonly status: Status;
  /**
   * The last error, when `status` is `error`; while `connecting` after the client itself dropped
   * a connection, the reason: `code` `"heartbeat_timeout"` (nothing, not even a heartbeat, for
   * {@link STALL_FACTOR} announced intervals) or `"online"` (the browser's network came back).
   */
  readonly error: TidingsError | undefined;
  /**
   * Subscribes; returns the function that unsubscribes.
   *
   * @throws TidingsError when the client is closed, or when the subscription names no `events`
   * on the EventSource transport of a client created without `eventNames`.
   */
  subscribe<E extends EventName<M> = EventName<M>>(options: SubscribeOptions<M, E>): () => void;
  /**
   * Watches who is on `channel` (a channel the server gives presence, `--presence`): calls
   * `onChange` with its members after the snapshot and on every join and leave, and with
   * `join` makes this client one of them while the watch lasts. Returns the function that
   * stops it (and leaves). Members are kept across reconnects: each new connection's snapshot
   * replaces them.
   *
   * @throws TidingsError when `join` is given on a transport other than `"websocket"`.
   */
  presence<D = unknown>(channel: string, options?: PresenceOptions<D>): () => void;
  /** Calls `listener` on every status change; returns the function that stops it. */
  onStatus(listener: (status: Status, error: TidingsError | undefined) => void): () => void;
  /** The cursor over every channel seen: where a reconnect resumes. */
  cursor(): string;
  /** Reads stored events of one channel, oldest first: {@link Client.historyPage}'s entries. */
  history<E extends EventName<M> = EventName<M>>(channel: string, options?: HistoryOptions<M, E>): Promise<Envelope<M, E>[]>;
  /**
   * Reads stored events of one channel, oldest first, with where to read on: the newest page,
   * or one `before` or `after` an id. `events` and `filter` are applied by the server, and
   * `limit` counts what passes.
   *
   * @example
   * let page = await client.historyPage("room:1", { limit: 20, filter: { user: "ada" } });
   * while (page.next) page = await client.historyPage("room:1", { limit: 20, filter: { user: "ada" }, before: page.next });
   */
  historyPage<E extends EventName<M> = EventName<M>>(channel: string, options?: HistoryOptions<M, E>): Promise<HistoryPage<M, E>>;
  /**
   * Emits an event over the WebSocket connection (`transport: "websocket"`), through the same
   * validation, authorization and rate limits as `POST /emit`: the token must grant publishing
   * on the channel. The connection is open while something is subscribed; an emit made while it
   * (re)connects waits for it.
   *
   * @throws TidingsError (the promise rejects) with the server's `status` and `code` when it
   * refuses the emit (`invalid_payload`, `forbidden`, `rate_limited`, …); with code
   * `"emit_unknown"` when the connection was lost before the answer (it may have been stored:
   * retry with the same `idempotencyKey`); `"emit_timeout"` after `timeoutMs`.
   */
  emit<E extends EventName<M>>(channel: string, event: E, data: M[E], options?: EmitOptions): Promise<Emitted>;
  /** Closes the connection for good. */
  close(): void;
}

interface Sub {
  channels: ReadonlySet<string>;
  events: ReadonlySet<string> | undefined;
  filter: Record<string, unknown> | undefined;
  onData: (envelope: Envelope<EventMap>) => void;
  onReset: ((info: ResetInfo) => void) | undefined;
  onReady: (() => void) | undefined;
  /** Whether `onReady` was called: it is called once, whatever reconnects follow. */
  ready: boolean;
}

/** What one connection was opened for: its channels, and its events filter (none: all events). */
interface Scope {
  channels: ReadonlySet<string>;
  events: ReadonlySet<string> | undefined;
}

// Whether events of `sub` reach a connection opened for `scope`.
function covers(scope: Scope, sub: Sub): boolean {
  for (const c of sub.channels) if (!scope.channels.has(c)) return false;
  if (scope.events === undefined) return true;
  if (sub.events === undefined) return false;
  for (const e of sub.events) if (!scope.events.has(e)) return false;
  return true;
}

// The longest delay setTimeout takes (about 24.8 days); a longer one would fire at once.
const MAX_TIMER_MS = 2_147_483_647;

const CONTROL_EVENTS = [
  "tidings.ready",
  "tidings.reset",
  "tidings.lagged",
  "tidings.expired",
  "tidings.ping",
  "tidings.presence.snapshot",
  "tidings.presence.join",
  "tidings.presence.leave",
] as const;

/**
 * A connection that delivers nothing, not even a heartbeat, for this many heartbeat intervals
 * (announced in `tidings.ready`) is taken for dead and replaced.
 */
export const STALL_FACTOR = 2.5;

/** The delay before reconnect attempt `attempt` (0-based). */
export function backoffDelay(backoff: Backoff, attempt: number, random: () => number): number {
  const base = Math.min(backoff.maxMs, backoff.initialMs * Math.pow(backoff.factor, attempt));
  const jitter = Math.min(Math.max(backoff.jitter, 0), 1);
  return Math.round(base * (1 - jitter * random()));
}

/**
 * Creates a client for the events of `M`. Nothing connects until something subscribes; all
 * subscriptions share one connection, which is re-opened with the current cursor when the set of
 * channels (or of filtered events) changes, so no event is lost or repeated across the switch.
 *
 * An app normally calls the `createClient` its generated code exports, which fills in `M` and
 * `eventNames` from the schema. Called directly, pass both (or see {@link ClientOptions.eventNames}):
 *
 * @example
 * type Orders = { "order.created": { id: number } };
 * const client = createClient<Orders>({ url: "/rt", eventNames: ["order.created"] });
 * client.subscribe({
 *   channels: ["shop:1"],
 *   events: ["order.created"],
 *   onData: (e) => console.log(e.data.id), // e.data: { id: number }
 *   onReady: () => console.log("live"),
 * });
 */
export function createClient<M extends EventMap = EventMap>(options: ClientOptions): Client<M> {
  const base = options.url.replace(/\/+$/, "");
  const backoff: Backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
  const random = options.random ?? Math.random;
  const fetchImpl = options.fetch ?? globalThis.fetch?.bind(globalThis);
  const transport = pickTransport(options, fetchImpl);

  const subs = new Set<Sub>();
  const positions = new Map<string, string>();
  const statusListeners = new Set<(status: Status, error: TidingsError | undefined) => void>();
  let status: Status = "disconnected";
  let lastError: TidingsError | undefined;
  let conn: Connection | undefined;
  let connKey = "";
  // What `conn` covers, once the server confirmed it (`tidings.ready`).
  let readyScope: Scope | undefined;
  let attempt = 0;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  // Set while a connect awaits its headers, so a sync in that window neither opens a second
  // connection nor leaves the first one open and orphaned.
  let pending: object | undefined;
  let syncQueued = false;
  let closed = false;
  // What the next token request is for; back to "connect" once a stream is ready.
  let tokenReason: TokenReason = "connect";
  // No connection before this time (ms since the epoch): set by a refusal with `Retry-After`, so
  // neither the backoff nor a change of subscriptions reconnects earlier than the server asked.
  let notBefore = 0;

  // Presence: members per watched channel (from snapshots, joins and leaves), the watchers, and
  // what each channel joins with (the first joining watcher's data).
  interface PresenceWatch {
    channel: string;
    join: unknown;
    onChange: ((members: readonly Member[], count: number) => void) | undefined;
  }
  const presenceWatches = new Set<PresenceWatch>();
  const members = new Map<string, Map<string, Member>>();
  const memberCounts = new Map<string, number>();
  // The channels the current connection joined presence on.
  let joinedOn = new Set<string>();
  const announcePresence = (channel: string) => {
    const list = [...(members.get(channel)?.values() ?? [])].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const count = Math.max(memberCounts.get(channel) ?? 0, list.length);
    for (const w of [...presenceWatches]) if (w.channel === channel) w.onChange?.(list, count);
  };
  // Joins and leaves on the current connection what the watches want now.
  const syncPresence = () => {
    if (status !== "connected" || conn?.send === undefined) return;
    const want = new Map<string, unknown>();
    for (const w of presenceWatches) if (w.join !== undefined && !want.has(w.channel)) want.set(w.channel, w.join);
    for (const [channel, data] of want) {
      if (joinedOn.has(channel)) continue;
      // A ref, so a refusal (presence_full, say) is an answer, not taken for a closing reason.
      const message: Record<string, unknown> = { type: "presence.join", ref: `presence:${channel}`, channel };
      if (data !== true) message["data"] = data;
      if (conn.send(message)) joinedOn.add(channel);
    }
    for (const channel of [...joinedOn]) {
      if (want.has(channel)) continue;
      if (conn.send({ type: "presence.leave", ref: `presence:${channel}`, channel })) joinedOn.delete(channel);
    }
  };

  // Emits waiting for their answer, by ref; `sent` once written to the current connection.
  interface PendingEmit {
    message: Record<string, unknown>;
    sent: boolean;
    resolve: (e: Emitted) => void;
    reject: (e: TidingsError) => void;
    timer: ReturnType<typeof setTimeout>;
  }
  const emits = new Map<string, PendingEmit>();
  let emitSeq = 0;
  const settleEmit = (ref: unknown, settle: (p: PendingEmit) => void) => {
    const p = typeof ref === "string" ? emits.get(ref) : undefined;
    if (p === undefined) return;
    emits.delete(ref as string);
    clearTimeout(p.timer);
    settle(p);
  };
  // Sends the emits not sent yet, once the connection is ready.
  const flushEmits = () => {
    if (status !== "connected" || conn === undefined) return;
    for (const [ref, p] of emits) {
      if (p.sent) continue;
      if (conn.send === undefined) {
        settleEmit(ref, (q) =>
          q.reject(new TidingsError('emit() needs transport: "websocket"; this transport only receives', { code: "emit_unsupported" })),
        );
      } else if (conn.send(p.message)) p.sent = true;
    }
  };
  // The connection went: an emit sent on it may or may not have been stored.
  const loseEmits = () => {
    for (const [ref, p] of emits) {
      if (!p.sent) continue;
      settleEmit(ref, (q) =>
        q.reject(
          new TidingsError("the connection was lost before the server answered the emit; it may have been stored: retry with the same idempotencyKey", {
            code: "emit_unknown",
          }),
        ),
      );
    }
  };

  // The heartbeat interval the server announced in its last `tidings.ready`, and when the
  // current connection last delivered anything (a frame or a heartbeat).
  let heartbeatMs: number | undefined;
  let lastFrameAt = 0;
  let watchdog: ReturnType<typeof setTimeout> | undefined;

  // `error` goes with "error" and, as the reason for reconnecting, with "connecting"; a
  // "connecting" without a reason keeps the one it has.
  const setStatus = (next: Status, error?: TidingsError) => {
    if (next === status && next !== "error" && error === undefined) return;
    lastError = next === "error" || next === "connecting" ? error : undefined;
    status = next;
    for (const listener of [...statusListeners]) listener(status, lastError);
  };

  const headers = async (): Promise<Record<string, string>> =>
    typeof options.headers === "function" ? await options.headers() : { ...options.headers };

  const getToken = async (reason: TokenReason): Promise<string | undefined> => {
    const t = options.token;
    const value = typeof t === "function" ? await t({ reason }) : t;
    return typeof value === "string" && value !== "" ? value : undefined;
  };

  // Whether a 401 may be cured by asking again: only a function can return another credential.
  const canRefresh = () =>
    typeof options.token === "function" || (options.token === undefined && typeof options.headers === "function");

  // What the connection should watch: every subscribed channel, and the events filter when every
  // subscription names its events.
  const wanted = () => {
    const channels = new Set<string>();
    let events: Set<string> | undefined = new Set<string>();
    for (const sub of subs) {
      for (const c of sub.channels) channels.add(c);
      if (!sub.events) events = undefined;
      else if (events) for (const e of sub.events) events.add(e);
    }
    const list = [...channels].sort();
    const ev = events ? [...events].sort() : undefined;
    // One connection serves every subscription: its filter passes what any of them wants, each
    // on its own channels; each subscription then gets what its own filter passes.
    let filter: string | undefined;
    if ([...subs].some((sub) => sub.filter !== undefined)) {
      const any = [...subs].map((sub) => {
        const scope = { channel: { in: [...sub.channels].sort() } };
        return sub.filter === undefined ? scope : { and: [scope, sub.filter] };
      });
      filter = JSON.stringify(any.length === 1 ? any[0] : { or: any });
    }
    return { channels: list, events: ev, filter, key: `${list.join(",")}|${ev?.join(",") ?? "*"}|${filter ?? ""}` };
  };

  // Every event name the connection listens for: the schema's, the subscriptions' (in case the
  // app's `eventNames` missed one) and the control events.
  const listenFor = (events: readonly string[] | undefined): string[] => [
    ...new Set([...(options.eventNames ?? []), ...(events ?? []), ...CONTROL_EVENTS]),
  ];

  // Calls `onReady` of the subscriptions the ready connection covers, once each.
  const announceReady = () => {
    const scope = readyScope;
    if (scope === undefined) return;
    for (const sub of [...subs]) {
      // An earlier `onReady` may have unsubscribed this one, or closed the client.
      if (sub.ready || !subs.has(sub) || !covers(scope, sub)) continue;
      sub.ready = true;
      sub.onReady?.();
    }
  };

  const stopWatchdog = () => {
    if (watchdog !== undefined) clearTimeout(watchdog);
    watchdog = undefined;
  };

  // Fires when the connection has been silent for STALL_FACTOR heartbeats. Re-armed lazily (a
  // frame only stamps `lastFrameAt`), so a busy stream costs no timer per frame.
  const armWatchdog = () => {
    stopWatchdog();
    if (heartbeatMs === undefined || conn === undefined) return;
    const limit = heartbeatMs * STALL_FACTOR;
    const left = lastFrameAt + limit - Date.now();
    if (left > 0) {
      watchdog = setTimeout(armWatchdog, Math.min(left, MAX_TIMER_MS));
      return;
    }
    reconnectNow(
      new TidingsError(
        `nothing from the server for ${(limit / 1000).toFixed(1)} s (heartbeat every ${(heartbeatMs / 1000).toFixed(1)} s): reconnecting`,
        { code: "heartbeat_timeout" },
      ),
    );
  };

  // Replaces the connection at once, resuming from the cursor: nothing lost or repeated.
  const reconnectNow = (reason: TidingsError) => {
    if (closed || subs.size === 0) return;
    dropConnection();
    attempt = 0;
    setStatus("connecting", reason);
    scheduleSync();
  };

  const dropConnection = () => {
    loseEmits();
    joinedOn = new Set();
    stopWatchdog();
    conn?.close();
    conn = undefined;
    readyScope = undefined;
    pending = undefined;
    connKey = "";
    if (retryTimer !== undefined) clearTimeout(retryTimer);
    retryTimer = undefined;
  };

  const sync = () => {
    syncQueued = false;
    if (closed) return;
    const want = wanted();
    if (want.channels.length === 0) {
      dropConnection();
      setStatus("disconnected");
      return;
    }
    if (want.key === connKey && (conn !== undefined || retryTimer !== undefined || pending !== undefined)) {
      // The connection stays: a subscription that joined it may be covered already.
      announceReady();
      return;
    }
    // A channel nobody watches any more is forgotten: subscribing to it again starts live, rather
    // than replaying what happened while nobody was looking.
    for (const channel of [...positions.keys()]) {
      if (!want.channels.includes(channel)) positions.delete(channel);
    }
    dropConnection();
    attempt = 0;
    const wait = notBefore - Date.now();
    if (wait > 0) {
      connKey = want.key;
      if (status !== "error") setStatus("connecting");
      retryIn(wait);
      return;
    }
    void connect(want.channels, want.events, want.filter, want.key);
  };

  // Connects after `delay` ms, to whatever is wanted then.
  const retryIn = (delay: number) => {
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      const want = wanted();
      if (want.channels.length > 0) void connect(want.channels, want.events, want.filter, want.key);
    }, delay);
  };

  const scheduleSync = () => {
    if (syncQueued) return;
    syncQueued = true;
    queueMicrotask(sync);
  };

  const connect = async (channels: string[], events: string[] | undefined, filter: string | undefined, key: string) => {
    connKey = key;
    setStatus("connecting");
    const query = new URLSearchParams();
    for (const c of channels) query.append("channel", c);
    if (events && events.length > 0) query.set("events", events.join(","));
    if (filter !== undefined) query.set("filter", filter);
    const cursor = formatCursor(positions, channels);
    if (cursor) query.set("cursor", cursor);
    const url = `${base}/realtime?${query.toString()}`;
    const token = {};
    pending = token;
    let hdrs: Record<string, string>;
    let bearer: string | undefined;
    try {
      hdrs = await headers();
    } catch (cause) {
      if (pending !== token) return;
      pending = undefined;
      return failed(key, new TidingsError("the headers function failed", { cause }));
    }
    try {
      bearer = await getToken(tokenReason);
    } catch (cause) {
      if (pending !== token) return;
      pending = undefined;
      return failed(key, new TidingsError("the token function failed", { cause }));
    }
    if (pending !== token || connKey !== key || closed) return; // dropped or replaced meanwhile
    pending = undefined;
    if (bearer !== undefined) hdrs = withBearer(hdrs, bearer);
    const scope: Scope = {
      channels: new Set(channels),
      // An empty filter is not sent: the server then sends every event.
      events: events && events.length > 0 ? new Set(events) : undefined,
    };
    let opened: Connection | undefined;
    // An error reported before transport() returns (a refused URL, say) is handled after it.
    let early: TidingsError | undefined;
    const mine = () => opened !== undefined && conn === opened;
    try {
      opened = transport(
        url,
        {
          eventNames: listenFor(events),
          headers: hdrs,
          withCredentials: options.withCredentials ?? false,
          ...(bearer === undefined ? {} : { token: bearer }),
        },
        {
          onOpen: () => {},
          onFrame: (frame) => {
            if (!mine()) return;
            lastFrameAt = Date.now();
            onFrame(frame, scope);
          },
          onError: (error) => {
            if (opened === undefined) early ??= error;
            else if (mine()) failed(key, error);
          },
        },
      );
    } catch (cause) {
      return failed(key, cause instanceof TidingsError ? cause : new TidingsError("cannot open the event stream", { cause }));
    }
    conn = opened;
    // A new connection can be dead from the start (a browser reusing a pooled keep-alive socket
    // that the network silently dropped): with an interval known from an earlier ready, the
    // watchdog covers the wait for this one's ready too.
    lastFrameAt = Date.now();
    armWatchdog();
    if (early !== undefined) {
      opened.close();
      failed(key, early);
    }
  };

  const failed = (key: string, refused: TidingsError) => {
    loseEmits();
    joinedOn = new Set();
    conn = undefined;
    readyScope = undefined;
    if (closed || key !== connKey) return;
    let error = refused;
    if (error.status === 401) {
      if (canRefresh()) tokenReason = "unauthenticated";
      // Nothing can change the credential: asking again with it would be refused again.
      else if (!error.permanent) error = asPermanent(error);
    }
    if (error.retryAfter !== undefined) {
      notBefore = Date.now() + Math.min(error.retryAfter * 1000, MAX_TIMER_MS);
    }
    setStatus("error", error);
    // A request the server refuses as malformed (say, a bad channel name) is refused again on
    // every retry: wait for the subscriptions to change instead of retrying forever.
    if (error.permanent) return;
    if (options.maxAttempts !== undefined && attempt + 1 >= options.maxAttempts) return;
    // The server's Retry-After, when it sent one, is a floor under the backoff delay.
    const delay = Math.max(backoffDelay(backoff, attempt, random), notBefore - Date.now());
    attempt += 1;
    retryIn(delay);
  };

  const mergeCursor = (id: string | undefined, except?: string) => {
    if (!id) return;
    for (const [channel, pos] of parseCursor(id)) {
      if (channel === except) continue;
      const mine = positions.get(channel);
      // At the same id, the server's position wins: it names the epoch.
      if (mine === undefined || compareIds(pos, mine) >= 0) positions.set(channel, pos);
    }
  };

  const onFrame = (frame: Frame, scope: Scope) => {
    switch (frame.event) {
      case "tidings.ready": {
        const ready = parseJson(frame.data) as { heartbeat_ms?: unknown } | undefined;
        // Servers older than the heartbeat event announce nothing: no watchdog then.
        const beat = ready?.heartbeat_ms;
        heartbeatMs = typeof beat === "number" && beat > 0 ? beat : undefined;
        armWatchdog();
        mergeCursor(frame.id);
        attempt = 0;
        notBefore = 0;
        tokenReason = "connect";
        readyScope = scope;
        setStatus("connected");
        // A status listener may have changed the subscriptions; `announceReady` reads them now
        // (and a listener that closed the client cleared the scope).
        announceReady();
        flushEmits();
        syncPresence();
        return;
      }
      case "tidings.presence.snapshot":
      case "tidings.presence.join":
      case "tidings.presence.leave": {
        const body = parseJson(frame.data) as
          | { channel?: unknown; members?: unknown; member?: unknown; count?: unknown }
          | undefined;
        const channel = typeof body?.channel === "string" ? body.channel : undefined;
        if (channel === undefined) return;
        let list = members.get(channel);
        if (list === undefined || frame.event === "tidings.presence.snapshot") {
          list = new Map();
          members.set(channel, list);
        }
        const asMember = (m: unknown): Member | undefined => {
          const o = m as Partial<Member> | null;
          if (!o || typeof o.id !== "string") return undefined;
          return { id: o.id, sub: o.sub ?? null, name: o.name ?? null, data: o.data ?? null };
        };
        if (frame.event === "tidings.presence.snapshot") {
          for (const m of Array.isArray(body?.members) ? body.members : []) {
            const member = asMember(m);
            if (member) list.set(member.id, member);
          }
          memberCounts.set(channel, typeof body?.count === "number" ? body.count : list.size);
        } else {
          const member = asMember(body?.member);
          if (!member) return;
          const before = list.size;
          // Against the snapshot, a join is an upsert and a leave a removal: either may repeat it.
          if (frame.event === "tidings.presence.join") list.set(member.id, member);
          else list.delete(member.id);
          const count = (memberCounts.get(channel) ?? before) + (list.size - before);
          memberCounts.set(channel, Math.max(count, list.size));
        }
        announcePresence(channel);
        return;
      }
      case "tidings.emitted": {
        const answer = parseJson(frame.data) as { ref?: unknown; id?: unknown; duplicate?: unknown } | undefined;
        settleEmit(answer?.ref, (p) => p.resolve({ id: String(answer?.id), duplicate: answer?.duplicate === true }));
        return;
      }
      case "tidings.error": {
        const body = parseJson(frame.data) as Record<string, unknown> | undefined;
        if (body) settleEmit(body["ref"], (p) => p.reject(TidingsError.fromBody(body)));
        return;
      }
      case "tidings.ping":
        return; // the heartbeat: its arrival (lastFrameAt) is all that counts
      case "tidings.reset": {
        const info = parseJson(frame.data) as { channel?: unknown; oldest?: unknown; reason?: unknown } | undefined;
        const channel = typeof info?.channel === "string" ? info.channel : undefined;
        // The reset's cursor may move this channel past ids we hold: take it as it is.
        for (const [c, pos] of parseCursor(frame.id ?? "")) {
          if (c === channel) positions.set(c, pos);
        }
        mergeCursor(frame.id, channel);
        if (channel === undefined) return;
        const reset: ResetInfo = { channel, oldest: typeof info?.oldest === "string" ? info.oldest : null };
        if (typeof info?.reason === "string") reset.reason = info.reason;
        for (const sub of [...subs]) if (sub.channels.has(channel)) sub.onReset?.(reset);
        return;
      }
      case "tidings.lagged":
        // The server closes the stream after this frame; reconnect at once from the cursor.
        mergeCursor(frame.id);
        dropConnection();
        scheduleSync();
        return;
      case "tidings.expired":
        // The token expired and the server ends the stream: reconnect at once from the cursor,
        // with a new token (a fixed one is refused with a 401, which then stops the client).
        mergeCursor(frame.id);
        tokenReason = "expired";
        dropConnection();
        scheduleSync();
        return;
      default: {
        const envelope = parseJson(frame.data) as Envelope<EventMap> | undefined;
        if (!envelope || typeof envelope.channel !== "string" || typeof envelope.id !== "string") return;
        const seen = positions.get(envelope.channel);
        if (seen !== undefined && compareIds(envelope.id, seen) <= 0) {
          mergeCursor(frame.id);
          return; // already delivered
        }
        positions.set(envelope.channel, envelope.id);
        mergeCursor(frame.id);
        for (const sub of [...subs]) {
          if (!sub.channels.has(envelope.channel)) continue;
          if (sub.events && !sub.events.has(envelope.event)) continue;
          if (sub.filter && !matchesFilter(sub.filter, envelope.channel, envelope.event, envelope.data)) continue;
          sub.onData(envelope);
        }
      }
    }
  };

  // The browser says the network is back (a Wi-Fi switch, a laptop that woke up): the old
  // connection is likely dead, so replace it now rather than after the watchdog's wait. A hidden
  // tab that is shown again had its timers throttled, the watchdog's among them: check it now.
  const stopNetwork = watchNetwork({
    online: () => reconnectNow(new TidingsError("the network is back: reconnecting", { code: "online" })),
    visible: () => armWatchdog(),
  });

  const api: Client<M> = {
    get status() {
      return status;
    },
    get error() {
      return lastError;
    },
    subscribe<E extends EventName<M> = EventName<M>>(o: SubscribeOptions<M, E>) {
      if (closed) throw new TidingsError("the client is closed");
      if (o.events === undefined && options.eventNames === undefined && transport.namedEventsOnly) {
        // It would connect, and never see an event: EventSource dispatches only the names it
        // listens for, and this client knows none but the subscriptions'.
        throw new TidingsError(
          "this subscription names no `events`, and the client has no `eventNames` for an EventSource " +
            "to listen for: pass `eventNames` to createClient (the generated createClient does), " +
            "name the subscription's `events`, or use transport: \"fetch\"",
        );
      }
      const sub: Sub = {
        channels: new Set(o.channels),
        events: o.events ? new Set<string>(o.events) : undefined,
        filter: o.filter as Record<string, unknown> | undefined,
        // The envelope's event is checked against `events` before `onData` is called.
        onData: o.onData as (envelope: Envelope<EventMap>) => void,
        onReset: o.onReset,
        onReady: o.onReady,
        ready: false,
      };
      subs.add(sub);
      scheduleSync();
      return () => {
        if (subs.delete(sub)) scheduleSync();
      };
    },
    presence<D = unknown>(channel: string, o: PresenceOptions<D> = {}) {
      if (closed) throw new TidingsError("the client is closed");
      if (o.join !== undefined && !transport.canSend) {
        throw new TidingsError('joining presence needs transport: "websocket"; a stream transport can only watch it');
      }
      const watch: PresenceWatch = {
        channel,
        join: o.join,
        onChange: o.onChange as PresenceWatch["onChange"],
      };
      presenceWatches.add(watch);
      // The watch is a subscription to the channel that wants none of its events.
      const stop = api.subscribe({ channels: [channel], events: [], onData: () => {} });
      if (members.has(channel)) queueMicrotask(() => presenceWatches.has(watch) && announcePresence(channel));
      syncPresence();
      return () => {
        if (!presenceWatches.delete(watch)) return;
        stop();
        syncPresence();
        if (![...presenceWatches].some((w) => w.channel === channel)) {
          members.delete(channel);
          memberCounts.delete(channel);
        }
      };
    },
    onStatus(listener) {
      statusListeners.add(listener);
      return () => statusListeners.delete(listener);
    },
    cursor() {
      return formatCursor(positions, [...positions.keys()].sort());
    },
    async history(channel, o = {}) {
      return (await api.historyPage(channel, o)).entries;
    },
    async historyPage<E extends EventName<M>>(channel: string, o: HistoryOptions<M, E> = {}): Promise<HistoryPage<M, E>> {
      if (!fetchImpl) throw new TidingsError("no fetch implementation available");
      const query = new URLSearchParams({ channel });
      if (o.limit !== undefined) query.set("limit", String(o.limit));
      if (o.after !== undefined) query.set("after", o.after);
      if (o.before !== undefined) query.set("before", o.before);
      if (o.events !== undefined) query.set("events", o.events.join(","));
      if (o.filter !== undefined) query.set("filter", JSON.stringify(o.filter));
      const read = async (reason: TokenReason) => {
        let hdrs: Record<string, string> = { accept: "application/json", ...(await headers()) };
        const bearer = await getToken(reason);
        if (bearer !== undefined) hdrs = withBearer(hdrs, bearer);
        return fetchImpl(`${base}/history?${query.toString()}`, {
          headers: hdrs,
          credentials: options.withCredentials ? "include" : "same-origin",
        });
      };
      let response = await read("history");
      // The token may have expired since the function returned it: ask for a new one, once.
      if (response.status === 401 && typeof options.token === "function") {
        await response.body?.cancel();
        response = await read("unauthenticated");
      }
      if (!response.ok) throw await TidingsError.fromResponse(response);
      const body = (await response.json()) as Partial<HistoryPage<M, E>>;
      return { entries: body.entries ?? [], next: body.next ?? null, reset: body.reset ?? null };
    },
    emit(channel, event, data, o = {}) {
      if (closed) return Promise.reject(new TidingsError("the client is closed"));
      if (subs.size === 0) {
        return Promise.reject(
          new TidingsError(
            "emit() sends over the client's WebSocket, which is open while something is subscribed: subscribe first, or emit with POST /emit from your server",
            { code: "emit_unsupported" },
          ),
        );
      }
      return new Promise<Emitted>((resolve, reject) => {
        const ref = `emit:${++emitSeq}`;
        const message: Record<string, unknown> = { type: "emit", ref, channel, event, data };
        if (o.idempotencyKey !== undefined) message["idempotency_key"] = o.idempotencyKey;
        const ms = o.timeoutMs ?? 10_000;
        const timer = setTimeout(() => {
          settleEmit(ref, (p) =>
            p.reject(
              new TidingsError(`no answer to the emit within ${ms} ms; it may have been stored: retry with the same idempotencyKey`, {
                code: "emit_timeout",
              }),
            ),
          );
        }, Math.min(ms, MAX_TIMER_MS));
        emits.set(ref, { message, sent: false, resolve, reject, timer });
        flushEmits();
      });
    },
    close() {
      closed = true;
      presenceWatches.clear();
      for (const ref of [...emits.keys()]) settleEmit(ref, (p) => p.reject(new TidingsError("the client is closed")));
      stopNetwork();
      subs.clear();
      dropConnection();
      setStatus("disconnected");
    },
  };
  return api;
}

/** `headers` with `Authorization: Bearer <token>`, replacing an `Authorization` in any case. */
function withBearer(headers: Record<string, string>, token: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.toLowerCase() !== "authorization") out[name] = value;
  }
  out["Authorization"] = `Bearer ${token}`;
  return out;
}

/** The same error, marked as one the client does not retry. */
function asPermanent(error: TidingsError): TidingsError {
  return new TidingsError(error.message, {
    ...(error.status === undefined ? {} : { status: error.status }),
    ...(error.code === undefined ? {} : { code: error.code }),
    ...(error.retryAfter === undefined ? {} : { retryAfter: error.retryAfter }),
    ...(error.cause === undefined ? {} : { cause: error.cause }),
    permanent: true,
  });
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function pickTransport(options: ClientOptions, fetchImpl: typeof fetch | undefined): Transport {
  const choice = options.transport;
  if (typeof choice === "function") return choice;
  if (choice === "websocket") {
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new TidingsError("no WebSocket implementation: pass options.WebSocket (in Node 20, the `ws` package)");
    return webSocketTransport(WS);
  }
  const ES = options.EventSource ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
  if (choice === "fetch" || (choice === undefined && ES === undefined)) {
    if (!fetchImpl) throw new TidingsError("no fetch implementation: pass options.fetch");
    return fetchTransport(fetchImpl);
  }
  if (!ES) throw new TidingsError("no EventSource implementation: pass options.EventSource or use transport: 'fetch'");
  return eventSourceTransport(ES);
}
