// Svelte bindings (Svelte 4 and 5): a client in component context, and subscriptions whose
// status is a store. `createRealtimeStore` and `createHistoryStore` work outside components.
import { getContext, hasContext, onDestroy, setContext } from "svelte";
import { writable, type Readable } from "svelte/store";
import { createClient, type Client, type ClientOptions, type ResetInfo, type Status } from "./client.js";
import type { Envelope, EventName } from "./generated/events.js";
import { createHistoryFeed, type FeedStatus, type HistoryFeedOptions } from "./history.js";

export type { Client, ClientOptions, ResetInfo, Status } from "./client.js";
export type { Envelope, EventName } from "./generated/events.js";
export type { FeedStatus } from "./history.js";

const CONTEXT_KEY = Symbol.for("@tidings/client/svelte");

/**
 * Puts a client in the context of the calling component and its children: `options` creates one
 * (closed when the component is destroyed), a `client` is shared as is. Call it during component
 * initialisation, typically in the root layout.
 *
 * @returns the client.
 */
export function provideRealtime(optionsOrClient: ClientOptions | Client): Client {
  let client: Client;
  if (isClient(optionsOrClient)) {
    client = optionsOrClient;
  } else {
    client = createClient(optionsOrClient);
    onDestroy(() => client.close());
  }
  setContext(CONTEXT_KEY, client);
  return client;
}

/**
 * The client a parent component provided with {@link provideRealtime}.
 *
 * @throws Error when none did.
 */
export function getRealtimeClient(): Client {
  const client = hasContext(CONTEXT_KEY) ? getContext<Client | undefined>(CONTEXT_KEY) : undefined;
  if (!client) throw new Error("getRealtimeClient: no parent component called provideRealtime()");
  return client;
}

/** Options of {@link useRealtime} and {@link createRealtimeStore}. */
export interface RealtimeOptions<E extends EventName = EventName> {
  /** Channels to watch. */
  channels: readonly string[];
  /** Only these events; default all. Narrows the envelope `onData` receives. */
  events?: readonly E[];
  /** Called once per event. */
  onData?: (envelope: Envelope<E>) => void;
  /** History of a channel was trimmed past this client's cursor: reload that channel's state. */
  onReset?: (info: ResetInfo) => void;
  /** `false` unsubscribes (default `true`). */
  enabled?: boolean;
}

/** A subscription whose options may change. */
export interface RealtimeStore {
  /** The connection's status; `"disconnected"` while the subscription is disabled. */
  status: Readable<Status>;
  /** Unsubscribes for good. */
  destroy(): void;
}

/**
 * Subscribes `client` with `options`, or with every value of a store of options: it subscribes
 * again when `channels`, `events` or `enabled` change (by value), and otherwise only takes the
 * new callbacks. Works anywhere; call `destroy()` when done.
 */
export function createRealtimeStore<E extends EventName = EventName>(
  client: Client,
  options: RealtimeOptions<E> | Readable<RealtimeOptions<E>>,
): RealtimeStore {
  let current: RealtimeOptions<E> | undefined;
  let key: string | undefined;
  let unsubscribe: (() => void) | undefined;
  let destroyed = false;
  const status = writable<Status>("disconnected");
  const showStatus = () => status.set(current && (current.enabled ?? true) ? client.status : "disconnected");

  const apply = (next: RealtimeOptions<E>) => {
    if (destroyed) return;
    current = next;
    const enabled = (next.enabled ?? true) && next.channels.length > 0;
    const nextKey = enabled ? JSON.stringify([next.channels, next.events ?? null]) : undefined;
    if (nextKey !== key) {
      unsubscribe?.();
      unsubscribe = undefined;
      key = nextKey;
      if (enabled) {
        unsubscribe = client.subscribe<E>({
          channels: [...next.channels],
          ...(next.events ? { events: [...next.events] } : {}),
          onData: (envelope) => current?.onData?.(envelope),
          onReset: (info) => current?.onReset?.(info),
        });
      }
    }
    showStatus();
  };

  const stopStatus = client.onStatus(showStatus);
  const stopOptions = isReadable(options) ? options.subscribe(apply) : (apply(options), undefined);

  return {
    status: { subscribe: status.subscribe },
    destroy() {
      if (destroyed) return;
      destroyed = true;
      stopOptions?.();
      stopStatus();
      unsubscribe?.();
      unsubscribe = undefined;
    },
  };
}

/**
 * Subscribes through the provided client for the life of the calling component; pass a store of
 * options (e.g. `derived(room, (r) => ({ channels: [r], onData }))`) to follow changes.
 *
 * @example
 * const { status } = useRealtime({
 *   channels: ["room:1"],
 *   events: ["chat.message"],
 *   onData: (m) => (messages = [...messages, m.data]), // m.data: ChatMessage
 * });
 */
export function useRealtime<E extends EventName = EventName>(
  options: RealtimeOptions<E> | Readable<RealtimeOptions<E>>,
): { status: Readable<Status> } {
  const store = createRealtimeStore(getRealtimeClient(), options);
  onDestroy(store.destroy);
  return { status: store.status };
}

/** What {@link createHistoryStore} holds. */
export interface HistoryValue<E extends EventName = EventName> {
  /** Oldest first, at most `limit`. */
  entries: readonly Envelope<E>[];
  status: FeedStatus;
  /** Why loading failed, when `status` is `"error"`. */
  error: unknown;
}

/** A store of a channel's history kept current (see {@link createHistoryFeed}). */
export interface HistoryStore<E extends EventName = EventName> extends Readable<HistoryValue<E>> {
  /** Fetches history again. */
  reload(): Promise<void>;
  /** Stops the feed. */
  destroy(): void;
}

/** The inbox pattern as a store, outside components: call `destroy()` when done. */
export function createHistoryStore<E extends EventName = EventName>(
  client: Client,
  channel: string,
  options: HistoryFeedOptions<E> = {},
): HistoryStore<E> {
  const value = writable<HistoryValue<E>>({ entries: [], status: "loading", error: undefined });
  const feed = createHistoryFeed<E>(client, channel, options, (f) =>
    value.set({ entries: f.entries(), status: f.status, error: f.error }),
  );
  return { subscribe: value.subscribe, reload: feed.reload, destroy: feed.close };
}

/**
 * The inbox pattern for the life of the calling component: `$history.entries` is the channel's
 * newest `limit` entries, with live events appended.
 */
export function useHistory<E extends EventName = EventName>(
  channel: string,
  options: HistoryFeedOptions<E> = {},
): HistoryStore<E> {
  const store = createHistoryStore(getRealtimeClient(), channel, options);
  onDestroy(store.destroy);
  return store;
}

function isClient(value: ClientOptions | Client): value is Client {
  return typeof (value as Partial<Client>).subscribe === "function";
}

function isReadable<T>(value: T | Readable<T>): value is Readable<T> {
  return typeof (value as Partial<Readable<T>>).subscribe === "function";
}
