// Type-level tests for the React and Svelte bindings, through the generated ones (test/generated,
// bound to the test schema) and generic ones, checked by `tsc --noEmit -p .` (nothing here runs:
// hooks are only called inside functions).
//
// Every `@ts-expect-error` line must be a type error: tsc fails with "Unused '@ts-expect-error'
// directive" when one compiles.
import { createElement } from "react";
import { writable, type Readable } from "svelte/store";
import type { Status, TokenReason } from "@tidings/client";
import { createHistoryFeed, type FeedStatus } from "@tidings/client/history";
import * as genericReact from "@tidings/client/react";
import * as genericSvelte from "@tidings/client/svelte";
import type { ChatMessage, Client, DocPresence, Envelope, EventMap, NotificationAlert } from "./generated/index.js";
import {
  RealtimeProvider,
  useChatMessage,
  useEvent,
  useHistory,
  useNotificationAlert,
  useRealtime,
  useRealtimeClient,
  usePresence,
  useStatus,
} from "./generated/react.js";
import * as svelte from "./generated/svelte.js";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T extends true>(): T | undefined {
  return undefined;
}
declare const client: Client;

// --- React: what must compile ------------------------------------------------------------

export function Provider() {
  createElement(RealtimeProvider, { url: "" });
  createElement(RealtimeProvider, { url: "/rt", transport: "fetch", headers: () => ({ authorization: "Bearer x" }) });
  // `token`: a string, or a function (sync or async) that may return nothing.
  createElement(RealtimeProvider, { url: "/rt", transport: "fetch", token: "jwt" });
  createElement(RealtimeProvider, { url: "/rt", token: () => "jwt" });
  createElement(RealtimeProvider, { url: "/rt", token: () => null });
  createElement(RealtimeProvider, {
    url: "/rt",
    token: async ({ reason }) => {
      assertType<Equal<typeof reason, TokenReason>>();
      return reason === "expired" || reason === "unauthenticated" ? "fresh" : undefined;
    },
  });
  return createElement(RealtimeProvider, { client }, "children");
}

export function Hooks() {
  const c: Client = useRealtimeClient();
  const s: Status = useStatus(c);

  const { status } = useRealtime({
    channels: ["room:1"],
    events: ["chat.message", "chat.typing"],
    onData(envelope) {
      assertType<Equal<typeof envelope, Envelope<"chat.message" | "chat.typing">>>();
      if (envelope.event === "chat.message") {
        const m: ChatMessage = envelope.data;
        return m.text;
      }
      return envelope.data.active;
    },
    onReset: (info) => info.oldest?.length,
    enabled: s === "connected",
  });
  assertType<Equal<typeof status, Status>>();

  // `onReady` takes nothing; `ready` is a boolean.
  const state = useRealtime({ channels: ["room:1"], onData() {}, onReady: () => {} });
  assertType<Equal<typeof state, genericReact.RealtimeState>>();
  assertType<Equal<typeof state.ready, boolean>>();
  const { ready } = useChatMessage("room:1", () => {}, { onReady: () => console.log("live") });
  assertType<Equal<typeof ready, boolean>>();

  // Without `events`, every event; the switch over `event` narrows `data`.
  useRealtime({
    channels: ["room:1", "alerts"],
    onData(envelope) {
      switch (envelope.event) {
        case "notification.alert":
          return envelope.data.toUpperCase();
        case "presence.status":
          return envelope.data.status;
        default:
          return envelope.id;
      }
    },
  });

  // Generated hooks: the payload type, one channel or several, options.
  useChatMessage("room:1", (data, envelope) => {
    assertType<Equal<typeof data, ChatMessage>>();
    assertType<Equal<typeof envelope, Envelope<"chat.message">>>();
    return data.mentions?.length;
  });
  useNotificationAlert(["alerts", "room:1"], (text: NotificationAlert) => text.trim(), { enabled: false });
  const alertState: { status: Status } = useNotificationAlert("alerts", () => {});
  useEvent("presence.status", "presence.status", (data) => data.status satisfies "online" | "away" | "offline");
  useEvent(["a", "b"], "chat.typing", (data, envelope) => {
    assertType<Equal<typeof envelope, Envelope<"chat.typing">>>();
    return data.active;
  });

  const history = useHistory("room:1", { limit: 50, events: ["chat.message"] });
  assertType<Equal<typeof history.entries, readonly Envelope<"chat.message">[]>>();
  assertType<Equal<typeof history.status, FeedStatus>>();
  const texts: string[] = history.entries.map((m) => `${m.data.user}: ${m.data.text}`);
  const all = useHistory("alerts");
  assertType<Equal<(typeof all.entries)[number], Envelope>>();
  void history.reload();

  return [status, alertState, texts];
}

// The bound client is typed by the schema.
export function BoundClient() {
  const c = useRealtimeClient();
  assertType<Equal<typeof c, Client>>();
  return c;
}

export const feed = createHistoryFeed(client, "room:1", { events: ["notification.alert"] }, (f) => {
  const alerts: string[] = f.entries().map((e) => e.data);
  return alerts;
});

// --- React: what must not compile ---------------------------------------------------------

export function Wrong() {
  // @ts-expect-error: neither `url` nor `client`
  createElement(RealtimeProvider, {});
  // @ts-expect-error: a token is a string or a function
  createElement(RealtimeProvider, { url: "", token: 42 });
  // @ts-expect-error: the token function returns a string (or nothing), not a number
  createElement(RealtimeProvider, { url: "", token: () => 42 });
  // @ts-expect-error: not a reason the client gives
  createElement(RealtimeProvider, { url: "", token: ({ reason }) => (reason === "refresh" ? "a" : "b") });
  // @ts-expect-error: a given client carries its own token
  createElement(RealtimeProvider, { client, token: "jwt" });

  useRealtime({
    channels: ["room:1"],
    // @ts-expect-error: not an event of the schema
    events: ["chat.nope"],
  });

  useRealtime({
    channels: ["room:1"],
    events: ["chat.typing"],
    onData(envelope) {
      // @ts-expect-error: narrowed to chat.typing by `events`: ChatTyping has no `text`
      return envelope.data.text;
    },
  });

  useRealtime({
    channels: ["room:1"],
    onData(envelope) {
      if (envelope.event === "chat.message") {
        // @ts-expect-error: narrowed to ChatMessage, which has no `nope`
        return envelope.data.nope;
      }
      // @ts-expect-error: not narrowed: `data` may be a notification.alert string
      return envelope.data.user;
    },
  });

  useChatMessage("room:1", (data) => {
    // @ts-expect-error: ChatMessage has no `nope`
    return data.nope;
  });

  // @ts-expect-error: a handler of another event's payload
  useChatMessage("room:1", (data: NotificationAlert) => data);

  // @ts-expect-error: not an event of the schema
  useEvent("room:1", "chat.nope", () => {});

  // @ts-expect-error: `enabled` is a boolean
  useNotificationAlert("alerts", () => {}, { enabled: "no" });

  // @ts-expect-error: `onReady` is called with nothing
  useNotificationAlert("alerts", () => {}, { onReady: (status: Status) => status });

  // @ts-expect-error: `ready` is a boolean, not a status
  const notStatus: Status = useRealtime({ channels: ["room:1"] }).ready;

  const history = useHistory("room:1", { events: ["chat.message"] });
  // @ts-expect-error: history entries are Envelope<"chat.message">: `data` has no `active`
  history.entries.map((e) => e.data.active);
  // @ts-expect-error: not an event of the schema
  useHistory("room:1", { events: ["chat.nope"] });
  return notStatus;
}

// --- React: the generic hooks, and bound to an ad-hoc map -------------------------------------

type Orders = { "order.created": { id: number }; "order.shipped": { id: number; carrier: string } };
const orders = genericReact.createRealtimeHooks<Orders>({ eventNames: ["order.created", "order.shipped"] });
declare const ordersClient: genericReact.Client<Orders>;

export function AdHocHooks() {
  createElement(orders.RealtimeProvider, { url: "/rt" });
  createElement(orders.RealtimeProvider, { client: ordersClient });
  orders.useEvent("shop:1", "order.shipped", (data, envelope) => {
    assertType<Equal<typeof data, { id: number; carrier: string }>>();
    assertType<Equal<typeof envelope.event, "order.shipped">>();
    return data.carrier;
  });
  const { ready } = orders.useRealtime({
    channels: ["shop:1"],
    events: ["order.created"],
    onData: (e) => e.data.id,
    onReady: () => {},
  });
  assertType<Equal<typeof ready, boolean>>();
  const history = orders.useHistory("shop:1", { events: ["order.created"] });
  assertType<Equal<typeof history.entries, readonly genericReact.Envelope<Orders, "order.created">[]>>();
  const c = orders.useRealtimeClient();
  assertType<Equal<typeof c, genericReact.Client<Orders>>>();
  orders.useStatus(c);

  // @ts-expect-error: an event of another schema
  orders.useEvent("shop:1", "chat.message", () => {});
  orders.useRealtime({
    channels: ["shop:1"],
    // @ts-expect-error: an event of another schema
    events: ["chat.message"],
  });
  orders.useEvent("shop:1", "order.created", (data) => {
    // @ts-expect-error: order.created has no `carrier`
    return data.carrier;
  });

  // The generic hooks take `M` from a given client.
  genericReact.useRealtime({
    client: ordersClient,
    events: ["order.shipped"],
    channels: ["shop:1"],
    onData: (e) => e.data.carrier,
  });
  genericReact.useEvent("shop:1", "order.created", (data) => data.id, { client: ordersClient });
  const h = genericReact.useHistory("shop:1", { client: ordersClient });
  assertType<Equal<(typeof h.entries)[number], genericReact.Envelope<Orders>>>();
  // Without one, events are untyped.
  genericReact.useRealtime({
    channels: ["x"],
    onData: (e) => {
      assertType<Equal<typeof e.data, unknown>>();
    },
  });
  return ready;
}

// --- Svelte ------------------------------------------------------------------------------

export function svelteStores() {
  const options = writable<genericSvelte.RealtimeOptions<EventMap, "chat.message">>({
    channels: ["room:1"],
    events: ["chat.message"],
    onData: (m) => m.data.text,
  });
  const live = svelte.createRealtimeStore(client, options);
  assertType<Equal<typeof live.status, Readable<Status>>>();
  assertType<Equal<typeof live.ready, Readable<boolean>>>();

  svelte.createRealtimeStore(client, {
    channels: ["room:1"],
    events: ["notification.alert"],
    onData: (e) => e.data.toUpperCase(),
  });

  svelte.createRealtimeStore(client, {
    channels: ["room:1"],
    // @ts-expect-error: not an event of the schema
    events: ["chat.nope"],
  });

  svelte.createRealtimeStore(client, {
    channels: ["room:1"],
    events: ["chat.typing"],
    // @ts-expect-error: ChatTyping has no `text`
    onData: (e) => e.data.text,
  });

  const history = svelte.createHistoryStore(client, "room:1", { events: ["chat.message"] });
  history.subscribe((value) => {
    assertType<Equal<typeof value.entries, readonly Envelope<"chat.message">[]>>();
  });
  return live;
}

// In a component: `provideRealtime` takes options or a client.
export function svelteComponent() {
  const c: Client = svelte.provideRealtime({ url: "" });
  svelte.provideRealtime({ url: "", transport: "fetch", token: async () => "jwt" });
  svelte.provideRealtime({ url: "", token: "jwt" });
  // @ts-expect-error: a token is a string or a function
  svelte.provideRealtime({ url: "", token: { jwt: "x" } });
  svelte.provideRealtime(c);
  // @ts-expect-error: `url` is required
  svelte.provideRealtime({ transport: "fetch" });
  const { status } = svelte.useRealtime({ channels: ["room:1"], events: ["chat.message"], onData: (m) => m.data.user });
  const bound: Client = svelte.getRealtimeClient();
  svelte.provideRealtime(bound);

  // Per event: the payload type, one channel or several, options; a handle of stores.
  const handle = svelte.useChatMessage("room:1", (data, envelope) => {
    assertType<Equal<typeof data, ChatMessage>>();
    assertType<Equal<typeof envelope, Envelope<"chat.message">>>();
  });
  assertType<Equal<typeof handle, genericSvelte.RealtimeHandle>>();
  assertType<Equal<typeof handle.ready, Readable<boolean>>>();
  svelte.useNotificationAlert(["alerts", "room:1"], (text) => text.trim(), { enabled: false, onReady: () => {} });
  svelte.useEvent("room:1", "presence.status", (data) => data.status satisfies "online" | "away" | "offline");
  const history = svelte.useHistory("room:1", { events: ["chat.typing"] });
  history.subscribe((value) => {
    assertType<Equal<typeof value.entries, readonly Envelope<"chat.typing">[]>>();
  });

  // @ts-expect-error: not an event of the schema
  svelte.useEvent("room:1", "chat.nope", () => {});
  // @ts-expect-error: ChatMessage has no `nope`
  svelte.useChatMessage("room:1", (data) => data.nope);
  // @ts-expect-error: `onReady` is called with nothing
  svelte.useChatTyping("room:1", () => {}, { onReady: (x: number) => x });

  // Bound to an ad-hoc map.
  const shop = genericSvelte.createRealtimeBindings<Orders>({ eventNames: ["order.created", "order.shipped"] });
  shop.provideRealtime({ url: "/rt" });
  shop.useEvent("shop:1", "order.shipped", (data) => data.carrier);
  const store = shop.createRealtimeStore(ordersClient, { channels: ["shop:1"], events: ["order.created"], onData: (e) => e.data.id });
  assertType<Equal<typeof store.ready, Readable<boolean>>>();
  // @ts-expect-error: an event of another schema
  shop.useEvent("shop:1", "chat.message", () => {});
  return status;
}

// Presence: members' data is typed by the schema's `presence` entry for the channel (doc:* in
// the test schema), and `join` must be that type (or true); other channels' data is unknown.
export function PresencePanel() {
  const { members, count, status } = usePresence("doc:1", { join: { status: "editing" } });
  assertType<Equal<typeof count, number>>();
  assertType<Equal<typeof status, Status>>();
  const first = members[0];
  if (first) {
    assertType<Equal<typeof first.data, DocPresence | null>>();
    assertType<Equal<typeof first.name, string | null>>();
  }
  // @ts-expect-error: "typing" is not a status the schema allows
  usePresence("doc:1", { join: { status: "typing" } });
  usePresence("doc:1", { join: true });
  const other = usePresence("room:1");
  assertType<Equal<(typeof other.members)[number]["data"], unknown>>();
  const store = svelte.usePresence("doc:1", { join: { cursor: 3 } });
  // @ts-expect-error: cursor is a number
  svelte.createPresenceStore(client, "doc:1", { join: { cursor: "3" } });
  // The generic hook takes the data type it is given.
  const generic = genericReact.usePresence<{ seat: number }>("room:1", { join: { seat: 4 } });
  assertType<Equal<(typeof generic.members)[number]["data"], { seat: number } | null>>();
  return store;
}

// Filters are typed by the subscription's payloads: a wrong path or value type does not compile.
export function filtered(c: Client) {
  c.subscribe({ channels: ["room:1"], events: ["chat.message"], filter: { user: "ada", text: { prefix: "hi" } }, onData: () => {} });
  c.subscribe({ channels: ["room:1"], events: ["presence.status"], filter: { status: { in: ["away", "online"] } }, onData: () => {} });
  c.subscribe({ channels: ["room:1"], filter: { or: [{ event: "chat.typing" }, { user: "ada" }] }, onData: () => {} });
  // @ts-expect-error: chat.message has no field colour
  c.subscribe({ channels: ["room:1"], events: ["chat.message"], filter: { colour: "red" }, onData: () => {} });
  // @ts-expect-error: active is a boolean
  c.subscribe({ channels: ["room:1"], events: ["chat.typing"], filter: { active: "yes" }, onData: () => {} });
  // @ts-expect-error: busy is not an Availability
  c.subscribe({ channels: ["room:1"], events: ["presence.status"], filter: { status: "busy" }, onData: () => {} });
  // @ts-expect-error: gt compares numbers, user is a string
  c.subscribe({ channels: ["room:1"], events: ["chat.message"], filter: { user: { gt: 3 } }, onData: () => {} });
}

// Filters in the hooks, the history feed and history reads: typed by the events they cover.
export function filteredHooks(c: Client) {
  useChatMessage("room:1", () => {}, { filter: { user: "ada", text: { prefix: "hi" } } });
  useRealtime({ channels: ["room:1"], events: ["chat.typing"], filter: { active: true }, onData: () => {} });
  const h = useHistory("room:1", { events: ["chat.message"], filter: { user: { in: ["ada", "bob"] } } });
  assertType<Equal<typeof h.entries, readonly Envelope<"chat.message">[]>>();
  svelte.useChatTyping("room:1", () => {}, { filter: { active: false } });
  svelte.useRealtime({ channels: ["room:1"], events: ["chat.message"], filter: { user: "ada" } });
  svelte.useHistory("room:1", { events: ["presence.status"], filter: { status: "away" } });
  createHistoryFeed(c, "room:1", { events: ["chat.message"], filter: { text: { prefix: "a" } } }, () => {});
  void c.history("room:1", { events: ["chat.message"], filter: { user: "ada" } }).then((entries) => {
    assertType<Equal<typeof entries, Envelope<"chat.message">[]>>();
  });
  void c.historyPage("room:1", { filter: { event: "chat.typing" }, before: "1-0" }).then((page) => {
    assertType<Equal<typeof page.next, string | null>>();
  });

  // @ts-expect-error: chat.message has no field active
  useChatMessage("room:1", () => {}, { filter: { active: true } });
  // @ts-expect-error: active is a boolean
  useRealtime({ channels: ["room:1"], events: ["chat.typing"], filter: { active: 1 }, onData: () => {} });
  // @ts-expect-error: gt compares numbers
  useHistory("room:1", { events: ["chat.message"], filter: { user: { gt: 1 } } });
  // @ts-expect-error: busy is not an Availability
  svelte.useHistory("room:1", { events: ["presence.status"], filter: { status: "busy" } });
  // @ts-expect-error: chat.typing has no field text
  svelte.useChatTyping("room:1", () => {}, { filter: { text: "x" } });
  // @ts-expect-error: chat.message has no field colour
  void c.history("room:1", { events: ["chat.message"], filter: { colour: "red" } });
  // @ts-expect-error: not an event of the schema
  void c.historyPage("room:1", { events: ["chat.nope"] });
}
