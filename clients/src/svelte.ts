// Svelte bindings (Svelte 4 and 5): a client in component context, and subscriptions whose
// status and readiness are stores. `createRealtimeStore` and `createHistoryStore` work outside
// components.
//
// Everything is generic over the app's `EventMap`; `createRealtimeBindings` binds the functions
// to one, and the app's generated `svelte.ts` calls it (and adds a function per event).
import { getContext, hasContext, onDestroy, setContext } from "svelte";
import { writable, type Readable } from "svelte/store";
import { createClient, type Client, type ClientOptions, type Member, type ResetInfo, type Status } from "./client.js";
import { createHistoryFeed, type FeedStatus, type HistoryFeedOptions } from "./history.js";
import type { Filter } from "./filter.js";
import type { Envelope, EventMap, EventName } from "./types.js";

export type { Client, ClientOptions, Member, ResetInfo, Status } from "./client.js";
export type { FeedStatus, HistoryFeedOptions } from "./history.js";
export type { Envelope, EventMap, EventName } from "./types.js";

const CONTEXT_KEY = Symbol.for("@tidings/client/svelte");

/**
 * Puts a client in the context of the calling component and its children: `options` creates one
 * (closed when the component is destroyed), a `client` is shared as is. Call it during component
 * initialisation, typically in the root layout.
 *
 * This one knows no schema: give the options `eventNames` (see {@link ClientOptions.eventNames}),
 * or use the `provideRealtime` of the app's generated `svelte.ts` ({@link createRealtimeBindings}),
 * which fills them in.
 *
 * @returns the client.
 */
export function provideRealtime<M extends EventMap = EventMap>(optionsOrClient: ClientOptions | Client<M>): Client<M> {
  let client: Client<M>;
  if (isClient(optionsOrClient)) {
    client = optionsOrClient;
  } else {
    client = createClient<M>(optionsOrClient);
    onDestroy(() => client.close());
  }
  setContext(CONTEXT_KEY, client);
  return client;
}

/**
 * The client a parent component provided with {@link provideRealtime}, typed as `Client<M>` (the
 * provider's event map is not checked: the bound `getRealtimeClient` of
 * {@link createRealtimeBindings} fills `M` in).
 *
 * @throws Error when none did.
 */
export function getRealtimeClient<M extends EventMap = EventMap>(): Client<M> {
  const client = hasContext(CONTEXT_KEY) ? getContext<Client<M> | undefined>(CONTEXT_KEY) : undefined;
  if (!client) throw new Error("getRealtimeClient: no parent component called provideRealtime()");
  return client;
}

/** Options of {@link useRealtime} and {@link createRealtimeStore}: `M` is the app's event map, `E` the events wanted. */
export interface RealtimeOptions<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>> {
  /** Channels to watch. */
  channels: readonly string[];
  /** Only these events; default all. Narrows the envelope `onData` receives. */
  events?: readonly E[];
  /** Only events whose payload passes, typed by the payloads of `E` (see {@link SubscribeOptions.filter}). */
  filter?: Filter<M[E], E>;
  /** Called once per event. */
  onData?: (envelope: Envelope<M, E>) => void;
  /** History of a channel was trimmed past this client's cursor: reload that channel's state. */
  onReset?: (info: ResetInfo) => void;
  /**
   * Called once per subscription, when events emitted from then on will reach `onData` (see
   * {@link SubscribeOptions.onReady}); again after it subscribes anew (other channels or events,
   * or enabled again).
   */
  onReady?: () => void;
  /** `false` unsubscribes (default `true`). */
  enabled?: boolean;
}

/** What {@link useRealtime}, {@link useEvent} and the per-event functions return. */
export interface RealtimeHandle {
  /** The connection's status; `"disconnected"` while the subscription is disabled. */
  status: Readable<Status>;
  /**
   * Whether the subscription is ready: its `onReady` has been called, so events emitted from now
   * on reach it. `false` again while disabled, and after it subscribes with other channels or
   * events until the new subscription is ready.
   */
  ready: Readable<boolean>;
}

/** A subscription whose options may change. */
export interface RealtimeStore extends RealtimeHandle {
  /** Unsubscribes for good. */
  destroy(): void;
}

/**
 * Subscribes `client` with `options`, or with every value of a store of options: it subscribes
 * again when `channels`, `events`, `filter` or `enabled` change (by value), and otherwise only takes the
 * new callbacks. Works anywhere; call `destroy()` when done.
 */
export function createRealtimeStore<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>>(
  client: Client<M>,
  options: RealtimeOptions<M, E> | Readable<RealtimeOptions<M, E>>,
): RealtimeStore {
  let current: RealtimeOptions<M, E> | undefined;
  let key: string | undefined;
  let unsubscribe: (() => void) | undefined;
  let destroyed = false;
  const status = writable<Status>("disconnected");
  const ready = writable(false);
  const showStatus = () => status.set(current && (current.enabled ?? true) ? client.status : "disconnected");

  const apply = (next: RealtimeOptions<M, E>) => {
    if (destroyed) return;
    current = next;
    const enabled = (next.enabled ?? true) && next.channels.length > 0;
    const nextKey = enabled ? JSON.stringify([next.channels, next.events ?? null, next.filter ?? null]) : undefined;
    if (nextKey !== key) {
      unsubscribe?.();
      unsubscribe = undefined;
      key = nextKey;
      ready.set(false);
      if (enabled) {
        unsubscribe = client.subscribe<E>({
          channels: [...next.channels],
          ...(next.events ? { events: [...next.events] } : {}),
          ...(next.filter ? { filter: next.filter } : {}),
          onData: (envelope) => current?.onData?.(envelope),
          onReset: (info) => current?.onReset?.(info),
          // Never called after `unsubscribe`, so this is the current subscription.
          onReady: () => {
            ready.set(true);
            current?.onReady?.();
          },
        });
      }
    }
    showStatus();
  };

  const stopStatus = client.onStatus(showStatus);
  const stopOptions = isReadable(options) ? options.subscribe(apply) : (apply(options), undefined);

  return {
    status: { subscribe: status.subscribe },
    ready: { subscribe: ready.subscribe },
    destroy() {
      if (destroyed) return;
      destroyed = true;
      stopOptions?.();
      stopStatus();
      unsubscribe?.();
      unsubscribe = undefined;
      ready.set(false);
    },
  };
}

/**
 * Subscribes through the provided client for the life of the calling component; pass a store of
 * options (e.g. `derived(room, (r) => ({ channels: [r], onData }))`) to follow changes. `M`
 * comes from the bound `useRealtime` of {@link createRealtimeBindings} (the app's generated
 * one, which is the one to use).
 *
 * @example
 * const { status, ready } = useRealtime({
 *   channels: ["room:1"],
 *   events: ["chat.message"],
 *   onData: (m) => (messages = [...messages, m.data]), // m.data: ChatMessage
 * });
 */
export function useRealtime<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>>(
  options: RealtimeOptions<M, E> | Readable<RealtimeOptions<M, E>>,
): RealtimeHandle {
  const store = createRealtimeStore(getRealtimeClient<M>(), options);
  onDestroy(store.destroy);
  return { status: store.status, ready: store.ready };
}

/** Options of {@link useEvent} and the per-event functions (`useChatMessage`, …), for event `E`. */
export interface EventHookOptions<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>> {
  /** Only events whose payload passes, typed by `E`'s payload (see {@link SubscribeOptions.filter}). */
  filter?: Filter<M[E], E>;
  /** `false` unsubscribes (default `true`). */
  enabled?: boolean;
  /** History of a channel was trimmed past this client's cursor. */
  onReset?: (info: ResetInfo) => void;
  /** The subscription is ready (see {@link RealtimeOptions.onReady}). */
  onReady?: () => void;
}

/**
 * Calls `handler` with the payload of every `event` on `channel` (one name or several), for the
 * life of the calling component. The generated functions (`useChatMessage(channel, handler)`, …)
 * are the bound `useEvent` of {@link createRealtimeBindings} with the event filled in; this
 * generic one cannot tell `M` (payloads are `unknown` unless it is given).
 *
 * @example
 * // with the app's generated `useEvent` (or `useChatMessage("room:1", handler)`):
 * const { status, ready } = useEvent("room:1", "chat.message", (m) => (messages = [...messages, m]));
 */
export function useEvent<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>>(
  channel: string | readonly string[],
  event: E,
  handler: (data: M[E], envelope: Envelope<M, E>) => void,
  options: EventHookOptions<M, E> = {},
): RealtimeHandle {
  return useRealtime<M, E>({
    channels: typeof channel === "string" ? [channel] : channel,
    events: [event],
    onData: (envelope) => handler(envelope.data as M[E], envelope),
    ...options,
  });
}

/** What {@link createHistoryStore} holds. */
export interface HistoryValue<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>> {
  /** Oldest first, at most `limit`. */
  entries: readonly Envelope<M, E>[];
  status: FeedStatus;
  /** Why loading failed, when `status` is `"error"`. */
  error: unknown;
}

/** A store of a channel's history kept current (see {@link createHistoryFeed}). */
export interface HistoryStore<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>>
  extends Readable<HistoryValue<M, E>> {
  /** Fetches history again. */
  reload(): Promise<void>;
  /** Stops the feed. */
  destroy(): void;
}

/** The inbox pattern as a store, outside components: call `destroy()` when done. */
export function createHistoryStore<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>>(
  client: Client<M>,
  channel: string,
  options: HistoryFeedOptions<M, E> = {},
): HistoryStore<M, E> {
  const value = writable<HistoryValue<M, E>>({ entries: [], status: "loading", error: undefined });
  const feed = createHistoryFeed<M, E>(client, channel, options, (f) =>
    value.set({ entries: f.entries(), status: f.status, error: f.error }),
  );
  return { subscribe: value.subscribe, reload: feed.reload, destroy: feed.close };
}

/**
 * The inbox pattern for the life of the calling component: `$history.entries` is the channel's
 * newest `limit` entries, with live events appended. Entries are typed by `M`, which the bound
 * `useHistory` of {@link createRealtimeBindings} fills in.
 */
export function useHistory<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>>(
  channel: string,
  options: HistoryFeedOptions<M, E> = {},
): HistoryStore<M, E> {
  const store = createHistoryStore<M, E>(getRealtimeClient<M>(), channel, options);
  onDestroy(store.destroy);
  return store;
}

/** What {@link createPresenceStore} holds. */
export interface PresenceValue<D = unknown> {
  /** Who is on the channel, in id order (empty until the snapshot arrives). */
  members: readonly Member<D>[];
  /** How many members there are in all. */
  count: number;
}

/** A store of who is on a channel; `destroy()` stops watching (and leaves). */
export interface PresenceStore<D = unknown> extends Readable<PresenceValue<D>> {
  destroy(): void;
}

/**
 * Who is on `channel` as a store, outside components (call `destroy()` when done); with
 * `join`, this client is one of them until then (WebSocket transport).
 */
export function createPresenceStore<D = unknown, M extends EventMap = EventMap>(
  client: Client<M>,
  channel: string,
  options: { join?: true | D } = {},
): PresenceStore<D> {
  const value = writable<PresenceValue<D>>({ members: [], count: 0 });
  const stop = client.presence<D>(channel, {
    ...options,
    onChange: (members, count) => value.set({ members, count }),
  });
  return { subscribe: value.subscribe, destroy: stop };
}

/**
 * Who is on `channel` for the life of the calling component: `$presence.members`.
 *
 * @example
 * const presence = usePresence<{ status: string }>("doc:42", { join: { status: "editing" } });
 * // {#each $presence.members as m (m.id)}<Avatar name={m.name ?? m.id} />{/each}
 */
export function usePresence<D = unknown, M extends EventMap = EventMap>(
  channel: string,
  options: { join?: true | D } = {},
): PresenceStore<D> {
  const store = createPresenceStore<D, M>(getRealtimeClient<M>(), channel, options);
  onDestroy(store.destroy);
  return store;
}

/** The functions of {@link createRealtimeBindings}: the generic ones with `M` filled in. */
export interface RealtimeBindings<M extends EventMap> {
  /** {@link provideRealtime}; a client it creates listens for the binding's `eventNames`. */
  provideRealtime: (optionsOrClient: ClientOptions | Client<M>) => Client<M>;
  /** {@link getRealtimeClient}, typed `Client<M>`. */
  getRealtimeClient: () => Client<M>;
  /** {@link useRealtime} for the events of `M`. */
  useRealtime: <E extends EventName<M> = EventName<M>>(
    options: RealtimeOptions<M, E> | Readable<RealtimeOptions<M, E>>,
  ) => RealtimeHandle;
  /** {@link useHistory} for the events of `M`. */
  useHistory: <E extends EventName<M> = EventName<M>>(
    channel: string,
    options?: HistoryFeedOptions<M, E>,
  ) => HistoryStore<M, E>;
  /** {@link useEvent} for the events of `M`. */
  useEvent: <E extends EventName<M>>(
    channel: string | readonly string[],
    event: E,
    handler: (data: M[E], envelope: Envelope<M, E>) => void,
    options?: EventHookOptions<M, E>,
  ) => RealtimeHandle;
  /** {@link createRealtimeStore} for the events of `M`. */
  createRealtimeStore: <E extends EventName<M> = EventName<M>>(
    client: Client<M>,
    options: RealtimeOptions<M, E> | Readable<RealtimeOptions<M, E>>,
  ) => RealtimeStore;
  /** {@link createHistoryStore} for the events of `M`. */
  createHistoryStore: <E extends EventName<M> = EventName<M>>(
    client: Client<M>,
    channel: string,
    options?: HistoryFeedOptions<M, E>,
  ) => HistoryStore<M, E>;
  /** {@link usePresence}. */
  usePresence: <D = unknown>(channel: string, options?: { join?: true | D }) => PresenceStore<D>;
  /** {@link createPresenceStore}. */
  createPresenceStore: <D = unknown>(client: Client<M>, channel: string, options?: { join?: true | D }) => PresenceStore<D>;
}

/**
 * Binds the Svelte functions to an app's events: `M` is its event map, `binding.eventNames` every
 * event name of its schema. The app's generated `svelte.ts` calls it and exports the result, with
 * a function per event on top; an app without generated code can call it itself.
 *
 * @example
 * type Orders = { "order.created": { id: number } };
 * export const { provideRealtime, useEvent } = createRealtimeBindings<Orders>({ eventNames: ["order.created"] });
 * // in a component:
 * const { ready } = useEvent("shop:1", "order.created", (order) => show(order.id)); // order: { id: number }
 */
export function createRealtimeBindings<M extends EventMap>(binding: { eventNames: readonly string[] }): RealtimeBindings<M> {
  const eventNames = [...binding.eventNames];
  return {
    provideRealtime: (optionsOrClient) =>
      provideRealtime<M>(
        isClient(optionsOrClient) || optionsOrClient.eventNames !== undefined
          ? optionsOrClient
          : { ...optionsOrClient, eventNames },
      ),
    getRealtimeClient: () => getRealtimeClient<M>(),
    useRealtime: (options) => useRealtime(options),
    useHistory: (channel, options) => useHistory(channel, options),
    useEvent: (channel, event, handler, options) => useEvent(channel, event, handler, options),
    createRealtimeStore: (client, options) => createRealtimeStore(client, options),
    createHistoryStore: (client, channel, options) => createHistoryStore(client, channel, options),
    usePresence: (channel, options) => usePresence(channel, options),
    createPresenceStore: (client, channel, options) => createPresenceStore(client, channel, options),
  };
}

function isClient<M extends EventMap>(value: ClientOptions | Client<M>): value is Client<M> {
  return typeof (value as Partial<Client<M>>).subscribe === "function";
}

function isReadable<T>(value: T | Readable<T>): value is Readable<T> {
  return typeof (value as Partial<Readable<T>>).subscribe === "function";
}
