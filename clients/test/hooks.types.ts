// Type-level tests for the React and Svelte bindings and the generated hooks, checked by
// `tsc --noEmit -p .` (nothing here runs: hooks are only called inside functions).
//
// Every `@ts-expect-error` line must be a type error: tsc fails with "Unused '@ts-expect-error'
// directive" when one compiles.
import { createElement } from "react";
import { writable } from "svelte/store";
import type { ChatMessage, Client, Envelope, NotificationAlert, Status, TokenReason } from "../src/index.js";
import { createHistoryFeed, type FeedStatus } from "../src/history.js";
import {
  RealtimeProvider,
  useChatMessage,
  useEvent,
  useHistory,
  useNotificationAlert,
  useRealtime,
  useRealtimeClient,
  useStatus,
} from "../src/react.js";
import * as svelte from "../src/svelte.js";

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

  const history = useHistory("room:1", { limit: 50, events: ["chat.message"] });
  assertType<Equal<typeof history.entries, readonly Envelope<"chat.message">[]>>();
  assertType<Equal<typeof history.status, FeedStatus>>();
  const texts: string[] = history.entries.map((m) => `${m.data.user}: ${m.data.text}`);
  const all = useHistory("alerts");
  assertType<Equal<(typeof all.entries)[number], Envelope>>();
  void history.reload();

  return [status, alertState, texts];
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

  const history = useHistory("room:1", { events: ["chat.message"] });
  // @ts-expect-error: history entries are Envelope<"chat.message">: `data` has no `active`
  history.entries.map((e) => e.data.active);
  // @ts-expect-error: not an event of the schema
  useHistory("room:1", { events: ["chat.nope"] });
}

// --- Svelte ------------------------------------------------------------------------------

export function svelteStores() {
  const options = writable<svelte.RealtimeOptions<"chat.message">>({
    channels: ["room:1"],
    events: ["chat.message"],
    onData: (m) => m.data.text,
  });
  const live = svelte.createRealtimeStore(client, options);
  assertType<Equal<typeof live.status, import("svelte/store").Readable<Status>>>();

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
  return status;
}
