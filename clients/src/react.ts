// React bindings: one client per <RealtimeProvider>, hooks that subscribe through it.
//
// No JSX here, so the package needs no JSX compiler settings. Works with React 18 and 19.
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
import { createClient, type Client, type ClientOptions, type ResetInfo, type Status } from "./client.js";
import type { Envelope, EventName } from "./generated/events.js";
import { createHistoryFeed, type FeedStatus, type HistoryFeed } from "./history.js";

export type { Client, ClientOptions, ResetInfo, Status } from "./client.js";
export type { Envelope, EventName } from "./generated/events.js";
export type { FeedStatus } from "./history.js";
export * from "./generated/react.js";

const RealtimeContext = createContext<Client | null>(null);
RealtimeContext.displayName = "RealtimeContext";

// Keeps refs to the latest props before any effect runs; React 18 warns about layout effects
// during server rendering, where nothing subscribes anyway.
const useLatestEffect = typeof window === "undefined" ? useEffect : useLayoutEffect;

/** Props of {@link RealtimeProvider}: a ready `client`, or the options to create one. */
export type RealtimeProviderProps =
  | { client: Client; children?: ReactNode }
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
 * @example
 * <RealtimeProvider url="/rt"><App /></RealtimeProvider>
 * <RealtimeProvider url="/rt" transport="fetch" token={() => auth.freshToken()}><App /></RealtimeProvider>
 */
export function RealtimeProvider(props: RealtimeProviderProps): ReactNode {
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
    const client = createClient({
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
  return createElement(RealtimeContext.Provider, { value: client ?? null }, props.children);
}

/**
 * The client of the nearest {@link RealtimeProvider}.
 *
 * @throws Error when there is none.
 */
export function useRealtimeClient(): Client {
  const client = useContext(RealtimeContext);
  if (!client) throw new Error("useRealtimeClient: no <RealtimeProvider> above this component");
  return client;
}

/** The connection's status, re-rendering on every change. */
export function useStatus(client?: Client): Status {
  const fromContext = useContext(RealtimeContext);
  const c = client ?? fromContext;
  if (!c) throw new Error("useStatus: no <RealtimeProvider> above this component and no client given");
  const subscribe = useCallback((onChange: () => void) => c.onStatus(onChange), [c]);
  const get = useCallback(() => c.status, [c]);
  return useSyncExternalStore(subscribe, get, () => "disconnected" as const);
}

/** Options of {@link useRealtime}. */
export interface UseRealtimeOptions<E extends EventName = EventName> {
  /** Channels to watch. */
  channels: readonly string[];
  /** Only these events; default all. Narrows the envelope `onData` receives. */
  events?: readonly E[];
  /** Called once per event. The latest function is called: it need not be stable. */
  onData?: (envelope: Envelope<E>) => void;
  /** History of a channel was trimmed past this client's cursor: reload that channel's state. */
  onReset?: (info: ResetInfo) => void;
  /** `false` unsubscribes (default `true`). */
  enabled?: boolean;
  /** Use this client rather than the provider's. */
  client?: Client;
}

/** What {@link useRealtime} returns. */
export interface RealtimeState {
  /** The connection's status; `"disconnected"` while the subscription is disabled. */
  status: Status;
}

/**
 * Subscribes to `channels` while the component is mounted. It subscribes again only when
 * `channels`, `events`, `enabled` or the client change (by value, so inline arrays are fine).
 *
 * @example
 * const { status } = useRealtime({
 *   channels: ["room:1"],
 *   events: ["chat.message", "chat.typing"],
 *   onData(envelope) {
 *     if (envelope.event === "chat.message") add(envelope.data.text); // ChatMessage
 *   },
 * });
 */
export function useRealtime<E extends EventName = EventName>(options: UseRealtimeOptions<E>): RealtimeState {
  const fromContext = useContext(RealtimeContext);
  const client = options.client ?? fromContext;
  if (!client) throw new Error("useRealtime: no <RealtimeProvider> above this component and no client given");
  const enabled = options.enabled ?? true;
  const latest = useRef(options);
  useLatestEffect(() => {
    latest.current = options;
  });

  const channelsKey = JSON.stringify(options.channels);
  const eventsKey = options.events ? JSON.stringify(options.events) : "*";
  useEffect(() => {
    if (!enabled) return;
    const channels = JSON.parse(channelsKey) as string[];
    if (channels.length === 0) return;
    const events = eventsKey === "*" ? undefined : (JSON.parse(eventsKey) as E[]);
    return client.subscribe<E>({
      channels,
      ...(events ? { events } : {}),
      onData: (envelope) => latest.current.onData?.(envelope),
      onReset: (info) => latest.current.onReset?.(info),
    });
  }, [client, channelsKey, eventsKey, enabled]);

  const status = useStatus(client);
  return { status: enabled ? status : "disconnected" };
}

/** Options of the per-event hooks (`useChatMessage`, …) and {@link useEvent}. */
export interface EventHookOptions {
  /** `false` unsubscribes (default `true`). */
  enabled?: boolean;
  /** History of a channel was trimmed past this client's cursor. */
  onReset?: (info: ResetInfo) => void;
  /** Use this client rather than the provider's. */
  client?: Client;
}

/**
 * Calls `handler` with the payload of every `event` on `channel` (one name or several). The
 * generated hooks (`useChatMessage(channel, handler)`, …) are this with the event filled in.
 */
export function useEvent<E extends EventName>(
  channel: string | readonly string[],
  event: E,
  handler: (data: Envelope<E>["data"], envelope: Envelope<E>) => void,
  options: EventHookOptions = {},
): RealtimeState {
  return useRealtime<E>({
    channels: typeof channel === "string" ? [channel] : channel,
    events: [event],
    onData: (envelope) => handler(envelope.data, envelope),
    ...options,
  });
}

/** Options of {@link useHistory}. */
export interface UseHistoryOptions<E extends EventName = EventName> {
  /** Keep the newest this many entries (default 100). */
  limit?: number;
  /** Only these events; default all. */
  events?: readonly E[];
  /** Called on `tidings.reset` for the channel, before the entries reload. */
  onReset?: (info: ResetInfo) => void;
  /** `false` drops the feed (default `true`). */
  enabled?: boolean;
  /** Use this client rather than the provider's. */
  client?: Client;
}

/** What {@link useHistory} returns. */
export interface HistoryState<E extends EventName = EventName> {
  /** Oldest first, at most `limit`. */
  entries: readonly Envelope<E>[];
  status: FeedStatus;
  /** Why loading failed, when `status` is `"error"`. */
  error: unknown;
  /** Fetches history again. */
  reload: () => Promise<void>;
}

const NO_ENTRIES: readonly never[] = [];

/**
 * The inbox pattern: the newest `limit` entries of `channel` from history, kept current by the
 * live stream, reloaded after a reset. See {@link createHistoryFeed}.
 *
 * @example
 * const { entries } = useHistory("room:1", { limit: 50, events: ["chat.message"] });
 * entries.map((m) => <li key={m.id}>{m.data.user}: {m.data.text}</li>);
 */
export function useHistory<E extends EventName = EventName>(
  channel: string,
  options: UseHistoryOptions<E> = {},
): HistoryState<E> {
  const fromContext = useContext(RealtimeContext);
  const client = options.client ?? fromContext;
  if (!client) throw new Error("useHistory: no <RealtimeProvider> above this component and no client given");
  const enabled = options.enabled ?? true;
  const latest = useRef(options);
  useLatestEffect(() => {
    latest.current = options;
  });
  const feedRef = useRef<HistoryFeed<E> | undefined>(undefined);
  const [snapshot, setSnapshot] = useState<{ entries: readonly Envelope<E>[]; status: FeedStatus; error: unknown }>(
    { entries: NO_ENTRIES, status: "loading", error: undefined },
  );

  const limit = options.limit;
  const eventsKey = options.events ? JSON.stringify(options.events) : "*";
  useEffect(() => {
    const events = eventsKey === "*" ? undefined : (JSON.parse(eventsKey) as E[]);
    if (!enabled) {
      setSnapshot({ entries: NO_ENTRIES, status: "loading", error: undefined });
      return;
    }
    const feed = createHistoryFeed<E>(
      client,
      channel,
      {
        ...(limit !== undefined ? { limit } : {}),
        ...(events ? { events } : {}),
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
  }, [client, channel, limit, eventsKey, enabled]);

  const reload = useCallback(() => feedRef.current?.reload() ?? Promise.resolve(), []);
  return { ...snapshot, reload };
}
