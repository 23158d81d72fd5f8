// The inbox pattern without a framework: a channel's recent history, kept current by the live
// stream. `react.ts` and `svelte.ts` wrap it; anything else can call it directly.
import type { Client, ResetInfo } from "./client.js";
import { compareIds } from "./cursor.js";
import { matchesFilter, type Filter } from "./filter.js";
import type { Envelope, EventMap, EventName } from "./types.js";

/** Where a feed stands: loading history, showing it, or failed to load it (live events still arrive). */
export type FeedStatus = "loading" | "ready" | "error";

/** Options of {@link createHistoryFeed}. */
export interface HistoryFeedOptions<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>> {
  /** Keep the newest this many entries (default 100, the server's default page). */
  limit?: number;
  /** Only these events; default all. */
  events?: readonly E[];
  /**
   * Only entries whose payload passes, typed by the payloads of `E` (see the README's
   * "Filters"). The server applies it to history and to the live stream alike, so `limit`
   * counts entries that pass.
   */
  filter?: Filter<M[E], E>;
  /** Called after `tidings.reset` for the channel, before the feed reloads. */
  onReset?: (info: ResetInfo) => void;
}

/** A channel's newest entries (events `E` of `M`), oldest first, with live events merged in. */
export interface HistoryFeed<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>> {
  /** The entries now, oldest first; a new array after every change, the same one otherwise. */
  entries(): readonly Envelope<M, E>[];
  readonly status: FeedStatus;
  /** Why the last load failed, when `status` is `"error"`. */
  readonly error: unknown;
  /** Fetches history again and merges it with what arrived live meanwhile. */
  reload(): Promise<void>;
  /** Unsubscribes; nothing changes afterwards. */
  close(): void;
}

/** The default number of entries a feed keeps. */
export const DEFAULT_FEED_LIMIT = 100;

/**
 * Watches `channel`: its newest `limit` entries from `client.history`, then every live event,
 * without losing or repeating one.
 *
 * It subscribes first and waits until the subscription is ready (`onReady`: the server then
 * sends everything after that point live), then fetches history; live events that arrive before
 * the fetch answers are kept, and merged with it by stream id. A `tidings.reset` (events were
 * missed) reloads from history. `onChange` is called after every change of `entries()` or
 * `status`. The entries are typed by the client's event map and `events`.
 *
 * It subscribes at once, so it throws where `client.subscribe` would: without `events`, on the
 * EventSource transport of a client created without `eventNames`.
 *
 * @example
 * const feed = createHistoryFeed(client, "room:1", { limit: 50, events: ["chat.message"], filter: { user: "ada" } }, (f) =>
 *   render(f.entries()), // Envelope<"chat.message">[] for a client of the generated createClient
 * );
 */
export function createHistoryFeed<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>>(
  client: Client<M>,
  channel: string,
  options: HistoryFeedOptions<M, E>,
  onChange: (feed: HistoryFeed<M, E>) => void,
): HistoryFeed<M, E> {
  const limit = Math.max(1, Math.floor(options.limit ?? DEFAULT_FEED_LIMIT));
  const wanted: ReadonlySet<string> | undefined = options.events ? new Set(options.events) : undefined;
  const filter = options.filter as Record<string, unknown> | undefined;

  let list: readonly Envelope<M, E>[] = [];
  let status: FeedStatus = "loading";
  let error: unknown;
  // Live events received before or while a load is in flight: the fetched page replaces the
  // list, and may or may not hold them.
  let pending: Envelope<M, E>[] = [];
  let collecting = true;
  let generation = 0;
  let started = false;
  let closed = false;

  const feed: HistoryFeed<M, E> = {
    entries: () => list,
    get status() {
      return status;
    },
    get error() {
      return error;
    },
    reload: () => load(),
    close,
  };

  const changed = () => {
    if (!closed) onChange(feed);
  };

  const load = async (): Promise<void> => {
    if (closed) return;
    started = true;
    const mine = ++generation;
    collecting = true;
    if (status !== "loading") {
      status = "loading";
      changed();
    }
    let page: Envelope<M, E>[];
    try {
      page = await client.history<E>(channel, {
        limit,
        ...(options.events ? { events: options.events } : {}),
        ...(options.filter ? { filter: options.filter } : {}),
      });
    } catch (cause) {
      if (closed || mine !== generation) return;
      collecting = false;
      pending = [];
      status = "error";
      error = cause;
      changed();
      return;
    }
    if (closed || mine !== generation) return;
    // The server applied `events` and `filter`; checked again here, as live events are.
    const fetched = page.filter(
      (e) => (!wanted || wanted.has(e.event)) && (!filter || matchesFilter(filter, e.channel, e.event, e.data)),
    );
    list = mergeEntries<Envelope<M, E>>(fetched, pending, limit);
    collecting = false;
    pending = [];
    status = "ready";
    error = undefined;
    changed();
  };

  // The server starts a channel without a cursor live from the moment it connects: fetching
  // history earlier would miss what is emitted between the fetch and that moment. Once the
  // subscription is ready, everything after the page arrives live. `onReady` comes once, so
  // history is fetched once (`reload` and resets fetch again).
  const unsubscribe = client.subscribe<E>({
    channels: [channel],
    ...(options.events ? { events: options.events } : {}),
    ...(options.filter ? { filter: options.filter } : {}),
    onData: (envelope) => {
      if (closed) return;
      if (collecting) pending.push(envelope);
      const next = mergeEntries(list, [envelope], limit);
      if (next === list) return;
      list = next;
      changed();
    },
    onReset: (info) => {
      if (closed) return;
      options.onReset?.(info);
      void load();
    },
    onReady: () => {
      if (!started && !closed) void load();
    },
  });

  function close() {
    if (closed) return;
    closed = true;
    unsubscribe();
  }

  return feed;
}

/**
 * Merges `incoming` into `base` (both oldest first): ordered by stream id, one entry per id, the
 * newest `limit` kept. Returns `base` itself when nothing changed.
 */
export function mergeEntries<T extends { id: string }>(
  base: readonly T[],
  incoming: readonly T[],
  limit: number,
): readonly T[] {
  let out: T[] | undefined;
  for (const entry of incoming) {
    const current: readonly T[] = out ?? base;
    const last = current[current.length - 1];
    // The usual case: a live event newer than everything held.
    if (last === undefined || compareIds(entry.id, last.id) > 0) {
      out = out ?? [...base];
      out.push(entry);
      continue;
    }
    const at = lowerBound(current, entry.id);
    // Older than everything a full list holds: it would be trimmed right away.
    if (at === 0 && current.length >= limit) continue;
    const there = current[at];
    if (there !== undefined && there.id === entry.id) continue;
    out = out ?? [...base];
    out.splice(at, 0, entry);
  }
  if (out === undefined) {
    return base.length > limit ? base.slice(base.length - limit) : base;
  }
  return out.length > limit ? out.slice(out.length - limit) : out;
}

/** The first index whose id is not older than `id`. */
function lowerBound(list: readonly { id: string }[], id: string): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const entry = list[mid];
    if (entry !== undefined && compareIds(entry.id, id) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
