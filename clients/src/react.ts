// React bindings: one client per <RealtimeProvider>, hooks that subscribe through it.
//
// Everything is generic over the app's `EventMap`; `createRealtimeHooks` binds the hooks to one,
// and the app's generated `react.ts` calls it (and adds a hook per event). No JSX here, so the
// package needs no JSX compiler settings. Works with React 18 and 19.
import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useLayoutEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
  type ReactNode,
} from "react";
import {
  createClient,
  type Client,
  type ClientOptions,
  type Member,
  type ResetInfo,
  type Status,
} from "./client.js";
import { createHistoryFeed, type FeedStatus, type HistoryFeed } from "./history.js";
import type { Envelope, EventMap, EventName } from "./types.js";
import type { Filter } from "./filter.js";

export type { Client, ClientOptions, Member, ResetInfo, Status } from "./client.js";
export type { FeedStatus } from "./history.js";
export type { Envelope, EventMap, EventName } from "./types.js";

// One context for every event map: the hooks of `createRealtimeHooks` and the generic ones find
// the same provider. What it holds is typed by the provider, not by the context.
const RealtimeContext = createContext<Client<EventMap> | null>(null);
RealtimeContext.displayName = "RealtimeContext";

// The provided client, typed as the caller's event map.
function useProvided<M extends EventMap>(): Client<M> | null {
  return useContext(RealtimeContext) as Client<M> | null;
}

// Keeps refs to the latest props before any effect runs; React 18 warns about layout effects
// during server rendering, where nothing subscribes anyway.
const useLatestEffect = typeof window === "undefined" ? useEffect : useLayoutEffect;

/** Props of {@link RealtimeProvider}: a ready `client`, or the options to create one. */
export type RealtimeProviderProps<M extends EventMap = EventMap> =
  | { client: Client<M>; children?: ReactNode }
  | (ClientOptions & { client?: undefined; children?: ReactNode });

/**
 * Shares one client (one connection) with every hook below it.
 *
 * Given `url` and options, it creates the client once, and again only when `url` or a named
 * `transport` changes; it closes the clients it created when it unmounts (StrictMode's
 * mount–unmount–mount keeps the same client). `headers` and `token` are read from the latest
 * props on every request, so a new function or token needs no new client. Because a new `token`
 * prop can always arrive, a 401 is retried with backoff here (with the token of the props at
 * that time), even when `token` is a string; a 403 is not. A `client` passed in is used as is
 * and never closed.
 *
 * This one knows no schema: give it `eventNames` (see {@link ClientOptions.eventNames}), or use
 * the `RealtimeProvider` of the app's generated `react.ts` ({@link createRealtimeHooks}), which
 * fills them in.
 *
 * @example
 * <RealtimeProvider url="/rt"><App /></RealtimeProvider>
 * <RealtimeProvider url="/rt" transport="fetch" token={() => auth.freshToken()}><App /></RealtimeProvider>
 */
export function RealtimeProvider<M extends EventMap = EventMap>(props: RealtimeProviderProps<M>): ReactNode {
  const given = props.client;
  const latest = useRef(props);
  useLatestEffect(() => {
    latest.current = props;
  });
  const url = given ? undefined : props.url;
  // A custom transport function may be a new one on every render: only a change of kind counts.
  const transport = given ? undefined : typeof props.transport === "function" ? "custom" : props.transport;

  const owned = useMemo(() => {
    if (props.client !== undefined) return undefined;
    const { children: _children, client: _client, ...options } = props;
    const client = createClient<M>({
      ...options,
      headers: async () => {
        const current = latest.current;
        const h = current.client === undefined ? current.headers : undefined;
        return typeof h === "function" ? await h() : { ...h };
      },
      token: (context) => {
        const current = latest.current;
        const t = current.client === undefined ? current.token : undefined;
        return typeof t === "function" ? t(context) : t;
      },
    });
    return { client, mounts: 0 };
    // The other options are read when the client is created; these need a new one.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [given, url, transport]);

  useEffect(() => {
    if (!owned) return;
    owned.mounts += 1;
    return () => {
      owned.mounts -= 1;
      // StrictMode unmounts and mounts again at once: close only if nothing mounted it again.
      queueMicrotask(() => {
        if (owned.mounts === 0) owned.client.close();
      });
    };
  }, [owned]);

  const client = given ?? owned?.client;
  return createElement(RealtimeContext.Provider, { value: (client as Client<EventMap> | undefined) ?? null }, props.children);
}

/**
 * The client of the nearest {@link RealtimeProvider}, typed as `Client<M>` (the provider's
 * event map is not checked: the bound `useRealtimeClient` of {@link createRealtimeHooks} fills
 * `M` in).
 *
 * @throws Error when there is none.
 */
export function useRealtimeClient<M extends EventMap = EventMap>(): Client<M> {
  const client = useProvided<M>();
  if (!client) throw new Error("useRealtimeClient: no <RealtimeProvider> above this component");
  return client;
}

/** The connection's status, re-rendering on every change. */
export function useStatus<M extends EventMap = EventMap>(client?: Client<M>): Status {
  const fromContext = useProvided<M>();
  const c = client ?? fromContext;
  if (!c) throw new Error("useStatus: no <RealtimeProvider> above this component and no client given");
  const subscribe = useCallback((onChange: () => void) => c.onStatus(onChange), [c]);
  const get = useCallback(() => c.status, [c]);
  return useSyncExternalStore(subscribe, get, () => "disconnected" as const);
}

/** Options of {@link useRealtime}: `M` is the app's event map, `E` the events wanted. */
export interface UseRealtimeOptions<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>> {
  /** Channels to watch. */
  channels: readonly string[];
  /** Only these events; default all. Narrows the envelope `onData` receives. */
  events?: readonly E[];
  /**
   * Only events whose payload passes, typed by the payloads of `E` (see
   * {@link SubscribeOptions.filter}); compared by value, so an inline object is fine.
   */
  filter?: Filter<M[E], E>;
  /** Called once per event. The latest function is called: it need not be stable. */
  onData?: (envelope: Envelope<M, E>) => void;
  /** History of a channel was trimmed past this client's cursor: reload that channel's state. */
  onReset?: (info: ResetInfo) => void;
  /**
   * Called once per subscription, when events emitted from then on will reach `onData` (see
   * {@link SubscribeOptions.onReady}); again after the hook subscribes anew (other channels,
   * events, client, or enabled again).
   */
  onReady?: () => void;
  /** `false` unsubscribes (default `true`). */
  enabled?: boolean;
  /** Use this client rather than the provider's. */
  client?: Client<M>;
}

/** What {@link useRealtime}, {@link useEvent} and the per-event hooks return. */
export interface RealtimeState {
  /** The connection's status; `"disconnected"` while the subscription is disabled. */
  status: Status;
  /**
   * Whether this subscription is ready: its `onReady` has been called, so events emitted from
   * now on reach it. `false` again while disabled, and after it subscribes with other channels
   * or events until the new subscription is ready.
   */
  ready: boolean;
}

/**
 * Subscribes to `channels` while the component is mounted. It subscribes again only when
 * `channels`, `events`, `filter`, `enabled` or the client change (by value, so inline arrays are fine).
 * `M` comes from `client`, or from the bound hook of {@link createRealtimeHooks} (the app's
 * generated `useRealtime`, which is the one to use).
 *
 * @example
 * const { status, ready } = useRealtime({
 *   channels: ["room:1"],
 *   events: ["chat.message", "chat.typing"],
 *   onData(envelope) {
 *     if (envelope.event === "chat.message") add(envelope.data.text); // ChatMessage
 *   },
 * });
 */
export function useRealtime<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>>(
  options: UseRealtimeOptions<M, E>,
): RealtimeState {
  const fromContext = useProvided<M>();
  const client = options.client ?? fromContext;
  if (!client) throw new Error("useRealtime: no <RealtimeProvider> above this component and no client given");
  const enabled = options.enabled ?? true;
  const latest = useRef(options);
  useLatestEffect(() => {
    latest.current = options;
  });

  const channelsKey = JSON.stringify(options.channels);
  const eventsKey = options.events ? JSON.stringify(options.events) : "*";
  const filterKey = options.filter ? JSON.stringify(options.filter) : "";
  const key = `${channelsKey}|${eventsKey}|${filterKey}`;
  // The subscription whose `onReady` came: compared with the current one while rendering, so a
  // change of channels shows `ready: false` at once, not after the effect.
  const [readyFor, setReadyFor] = useState<{ client: Client<M>; key: string } | undefined>(undefined);
  useEffect(() => {
    if (!enabled) return;
    const channels = JSON.parse(channelsKey) as string[];
    if (channels.length === 0) return;
    const events = eventsKey === "*" ? undefined : (JSON.parse(eventsKey) as E[]);
    const filter = filterKey === "" ? undefined : (JSON.parse(filterKey) as Filter<M[E], E>);
    const mine = { client, key: `${channelsKey}|${eventsKey}|${filterKey}` };
    const unsubscribe = client.subscribe<E>({
      channels,
      ...(events ? { events } : {}),
      ...(filter ? { filter } : {}),
      onData: (envelope) => latest.current.onData?.(envelope),
      onReset: (info) => latest.current.onReset?.(info),
      onReady: () => {
        setReadyFor(mine);
        latest.current.onReady?.();
      },
    });
    return () => {
      unsubscribe();
      // Disabled and enabled again with the same key: not ready until the new subscription is.
      setReadyFor((current) => (current === mine ? undefined : current));
    };
  }, [client, channelsKey, eventsKey, filterKey, enabled]);

  const status = useStatus(client);
  const ready = enabled && readyFor !== undefined && readyFor.client === client && readyFor.key === key;
  return { status: enabled ? status : "disconnected", ready };
}

/** Options of the per-event hooks (`useChatMessage`, …) and {@link useEvent}, for event `E`. */
export interface EventHookOptions<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>> {
  /** Only events whose payload passes, typed by `E`'s payload (see {@link UseRealtimeOptions.filter}). */
  filter?: Filter<M[E], E>;
  /** `false` unsubscribes (default `true`). */
  enabled?: boolean;
  /** History of a channel was trimmed past this client's cursor. */
  onReset?: (info: ResetInfo) => void;
  /** The subscription is ready (see {@link UseRealtimeOptions.onReady}). */
  onReady?: () => void;
  /** Use this client rather than the provider's. */
  client?: Client<M>;
}

/**
 * Calls `handler` with the payload of every `event` on `channel` (one name or several). The
 * generated hooks (`useChatMessage(channel, handler)`, …) are the bound `useEvent` of
 * {@link createRealtimeHooks} with the event filled in; this generic one takes `M` from
 * `options.client` (without it, payloads are `unknown`).
 *
 * @example
 * // with the app's generated `useEvent` (or `useChatMessage("room:1", handler)`):
 * const { ready } = useEvent("room:1", "chat.message", (message) => add(message.text)); // ChatMessage
 */
export function useEvent<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>>(
  channel: string | readonly string[],
  event: E,
  handler: (data: M[E], envelope: Envelope<M, E>) => void,
  options: EventHookOptions<M, E> = {},
): RealtimeState {
  return useRealtime<M, E>({
    channels: typeof channel === "string" ? [channel] : channel,
    events: [event],
    onData: (envelope) => handler(envelope.data as M[E], envelope),
    ...options,
  });
}

/** Options of {@link useHistory}. */
export interface UseHistoryOptions<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>> {
  /** Keep the newest this many entries (default 100). */
  limit?: number;
  /** Only these events; default all. */
  events?: readonly E[];
  /**
   * Only entries whose payload passes, in history and live alike (`limit` counts those), typed
   * by the payloads of `E`; compared by value, so an inline object is fine.
   */
  filter?: Filter<M[E], E>;
  /** Called on `tidings.reset` for the channel, before the entries reload. */
  onReset?: (info: ResetInfo) => void;
  /** `false` drops the feed (default `true`). */
  enabled?: boolean;
  /** Use this client rather than the provider's. */
  client?: Client<M>;
}

/** What {@link useHistory} returns. */
export interface HistoryState<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>> {
  /** Oldest first, at most `limit`. */
  entries: readonly Envelope<M, E>[];
  status: FeedStatus;
  /** Why loading failed, when `status` is `"error"`. */
  error: unknown;
  /** Fetches history again. */
  reload: () => Promise<void>;
}

const NO_ENTRIES: readonly never[] = [];

/**
 * The inbox pattern: the newest `limit` entries of `channel` from history, kept current by the
 * live stream, reloaded after a reset. See {@link createHistoryFeed}. Entries are typed by `M`,
 * from `options.client` or the bound `useHistory` of {@link createRealtimeHooks}.
 *
 * @example
 * // with the app's generated `useHistory`:
 * const { entries } = useHistory("room:1", { limit: 50, events: ["chat.message"], filter: { user: "ada" } });
 * entries.map((m) => <li key={m.id}>{m.data.user}: {m.data.text}</li>);
 */
export function useHistory<M extends EventMap = EventMap, E extends EventName<M> = EventName<M>>(
  channel: string,
  options: UseHistoryOptions<M, E> = {},
): HistoryState<M, E> {
  const fromContext = useProvided<M>();
  const client = options.client ?? fromContext;
  if (!client) throw new Error("useHistory: no <RealtimeProvider> above this component and no client given");
  const enabled = options.enabled ?? true;
  const latest = useRef(options);
  useLatestEffect(() => {
    latest.current = options;
  });
  const feedRef = useRef<HistoryFeed<M, E> | undefined>(undefined);
  const [snapshot, setSnapshot] = useState<{ entries: readonly Envelope<M, E>[]; status: FeedStatus; error: unknown }>(
    { entries: NO_ENTRIES, status: "loading", error: undefined },
  );

  const limit = options.limit;
  const eventsKey = options.events ? JSON.stringify(options.events) : "*";
  const filterKey = options.filter ? JSON.stringify(options.filter) : "";
  useEffect(() => {
    const events = eventsKey === "*" ? undefined : (JSON.parse(eventsKey) as E[]);
    const filter = filterKey === "" ? undefined : (JSON.parse(filterKey) as Filter<M[E], E>);
    if (!enabled) {
      setSnapshot({ entries: NO_ENTRIES, status: "loading", error: undefined });
      return;
    }
    const feed = createHistoryFeed<M, E>(
      client,
      channel,
      {
        ...(limit !== undefined ? { limit } : {}),
        ...(events ? { events } : {}),
        ...(filter ? { filter } : {}),
        onReset: (info) => latest.current.onReset?.(info),
      },
      (f) => setSnapshot({ entries: f.entries(), status: f.status, error: f.error }),
    );
    feedRef.current = feed;
    setSnapshot({ entries: feed.entries(), status: feed.status, error: feed.error });
    return () => {
      feed.close();
      if (feedRef.current === feed) feedRef.current = undefined;
    };
  }, [client, channel, limit, eventsKey, filterKey, enabled]);

  const reload = useCallback(() => feedRef.current?.reload() ?? Promise.resolve(), []);
  return { ...snapshot, reload };
}

/** Options of {@link usePresence}. */
export interface UsePresenceOptions<D = unknown, M extends EventMap = EventMap> {
  /**
   * Join the channel's presence while mounted: `true`, or the data to show others (WebSocket
   * transport). Read when the hook subscribes: a new value takes effect when `channel` changes.
   */
  join?: true | D;
  /** `false` stops watching (and leaves). Default `true`. */
  enabled?: boolean;
  /** Use this client rather than the provider's. */
  client?: Client<M>;
}

/** What {@link usePresence} returns. */
export interface PresenceState<D = unknown> {
  /** Who is on the channel, in id order (empty until the snapshot arrives). */
  members: readonly Member<D>[];
  /** How many members there are in all (the server shows at most its limit of them). */
  count: number;
  /** The connection's status. */
  status: Status;
}

/**
 * Who is on `channel` (a channel the server gives presence, `--presence`), re-rendering on
 * every join and leave; with `join`, this client is one of them while mounted. Two tabs of one
 * user are one member.
 *
 * @example
 * const { members } = usePresence<{ status: string }>("doc:42", { join: { status: "editing" } });
 * return members.map((m) => <Avatar key={m.id} name={m.name ?? m.id} />);
 */
export function usePresence<D = unknown, M extends EventMap = EventMap>(
  channel: string,
  options: UsePresenceOptions<D, M> = {},
): PresenceState<D> {
  const fromContext = useProvided<M>();
  const client = options.client ?? fromContext;
  if (!client) throw new Error("usePresence: no <RealtimeProvider> above this component and no client given");
  const enabled = options.enabled ?? true;
  const status = useStatus(client);
  const join = useRef(options.join);
  join.current = options.join;
  const [state, setState] = useState<{ key: string; members: readonly Member<D>[]; count: number }>({
    key: "",
    members: [],
    count: 0,
  });
  const key = `${channel}|${enabled ? "on" : "off"}`;
  useEffect(() => {
    if (!enabled) return;
    return client.presence<D>(channel, {
      ...(join.current !== undefined ? { join: join.current } : {}),
      onChange: (members, count) => setState({ key, members, count }),
    });
  }, [client, channel, enabled, key]);
  const current = state.key === key;
  return { members: current ? state.members : [], count: current ? state.count : 0, status };
}

/** The hooks of {@link createRealtimeHooks}: the generic ones with `M` filled in. */
export interface RealtimeHooks<M extends EventMap> {
  /** {@link RealtimeProvider}; a client it creates listens for the binding's `eventNames`. */
  RealtimeProvider: (props: RealtimeProviderProps<M>) => ReactNode;
  /** {@link useRealtime} for the events of `M`. */
  useRealtime: <E extends EventName<M> = EventName<M>>(options: UseRealtimeOptions<M, E>) => RealtimeState;
  /** {@link useHistory} for the events of `M`. */
  useHistory: <E extends EventName<M> = EventName<M>>(
    channel: string,
    options?: UseHistoryOptions<M, E>,
  ) => HistoryState<M, E>;
  /** {@link useStatus}. */
  useStatus: (client?: Client<M>) => Status;
  /** {@link useEvent} for the events of `M`. */
  useEvent: <E extends EventName<M>>(
    channel: string | readonly string[],
    event: E,
    handler: (data: M[E], envelope: Envelope<M, E>) => void,
    options?: EventHookOptions<M, E>,
  ) => RealtimeState;
  /** {@link useRealtimeClient}, typed `Client<M>`. */
  useRealtimeClient: () => Client<M>;
  /** {@link usePresence}. */
  usePresence: <D = unknown>(channel: string, options?: UsePresenceOptions<D, M>) => PresenceState<D>;
}

/**
 * Binds the hooks to an app's events: `M` is its event map, `binding.eventNames` every event
 * name of its schema. The app's generated `react.ts` calls it and exports the result, with a hook
 * per event on top; an app without generated code can call it itself.
 *
 * @example
 * type Orders = { "order.created": { id: number } };
 * export const { RealtimeProvider, useRealtime, useEvent } = createRealtimeHooks<Orders>({
 *   eventNames: ["order.created"],
 * });
 * // in a component:
 * useEvent("shop:1", "order.created", (order) => show(order.id)); // order: { id: number }
 */
export function createRealtimeHooks<M extends EventMap>(binding: { eventNames: readonly string[] }): RealtimeHooks<M> {
  const eventNames = [...binding.eventNames];
  return {
    RealtimeProvider: (props) =>
      RealtimeProvider<M>(props.client !== undefined || props.eventNames !== undefined ? props : { ...props, eventNames }),
    useRealtime: (options) => useRealtime(options),
    useHistory: (channel, options) => useHistory(channel, options),
    useStatus: (client) => useStatus(client),
    useEvent: (channel, event, handler, options) => useEvent(channel, event, handler, options),
    useRealtimeClient: () => useRealtimeClient<M>(),
    usePresence: (channel, options) => usePresence(channel, options),
  };
}
