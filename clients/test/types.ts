// Type-level tests for the generated event types (test/generated, bound to the test schema) and
// the generic ones of the package, checked by `npm run typecheck`.
//
// Every `@ts-expect-error` line below must be a type error: tsc fails with "Unused
// '@ts-expect-error' directive" if a change to the generator makes one of them compile.
import * as tidings from "@tidings/client";
import { EVENT_NAMES, createClient } from "./generated/index.js";
import type {
  Availability,
  ChatMessage,
  ChatTyping,
  Client,
  Envelope,
  EventMap,
  EventName,
  NotificationAlert,
  Payload,
  PresenceStatus,
  SubscribeOptions,
  UserName,
} from "./generated/index.js";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T extends true>(): T | undefined {
  return undefined;
}

// --- what must compile -------------------------------------------------------------------

export const minimal: ChatMessage = { text: "hi", user: "ann" };
export const full: ChatMessage = { text: "hi", user: "ann", reply_to: "1-0", mentions: ["bob"] };
export const typing: ChatTyping = { user: "ann", active: true };
export const alert: NotificationAlert = "Deploy at 5";
export const presence: PresenceStatus = { user: "ann", status: "away" };
export const user: UserName = "ann";

export const names: readonly EventName[] = EVENT_NAMES;
assertType<Equal<(typeof EVENT_NAMES)[number], EventName>>();
assertType<Equal<EventName, "chat.message" | "chat.typing" | "notification.alert" | "presence.status">>();
assertType<Equal<Availability, "online" | "away" | "offline">>();
assertType<Equal<Payload<"presence.status">, PresenceStatus>>();
assertType<Equal<EventMap["notification.alert"], string>>();
assertType<Equal<Envelope<"chat.typing">["data"], ChatTyping>>();
// The generated aliases are the package's types bound to the schema.
assertType<Equal<Envelope, tidings.Envelope<EventMap>>>();
assertType<Equal<Client, tidings.Client<EventMap>>>();
assertType<Equal<SubscribeOptions<"chat.message">, tidings.SubscribeOptions<EventMap, "chat.message">>>();
assertType<Equal<tidings.EventName<EventMap>, EventName>>();
assertType<Equal<tidings.Payload<EventMap, "chat.typing">, ChatTyping>>();
// An interface would not fit `Record<string, unknown>`: the generated map is a type alias.
export const fitsTheIndexSignature: tidings.EventMap = {} as EventMap;

export const one: Envelope<"chat.typing"> = {
  id: "1-0",
  channel: "room:1",
  event: "chat.typing",
  data: { user: "ann", active: false },
};

/** Checking `event` narrows `data`; the switch is exhaustive. */
export function describe(envelope: Envelope): string {
  switch (envelope.event) {
    case "chat.message":
      return `${envelope.data.user}: ${envelope.data.text}`;
    case "chat.typing":
      return envelope.data.active ? `${envelope.data.user} is typing` : "";
    case "notification.alert":
      return envelope.data.toUpperCase();
    case "presence.status":
      return `${envelope.data.user} is ${envelope.data.status}`;
    default: {
      const unreachable: never = envelope;
      return unreachable;
    }
  }
}

export function parseName(name: string): EventName | undefined {
  return (EVENT_NAMES as readonly string[]).includes(name) ? (name as EventName) : undefined;
}

// The generated client: subscriptions and history typed by the schema; `onReady` takes nothing.
export function generatedClient(): Client {
  const client = createClient({ url: "/rt" });
  client.subscribe({
    channels: ["room:1"],
    events: ["chat.typing"],
    onData(envelope) {
      assertType<Equal<typeof envelope, Envelope<"chat.typing">>>();
      return envelope.data.active;
    },
    onReady() {},
  });
  void client.history("room:1").then((entries) => {
    assertType<Equal<typeof entries, Envelope[]>>();
  });
  // Given names win over the schema's.
  createClient({ url: "/rt", eventNames: ["chat.message"] });
  return client;
}

// --- the generic package with an ad-hoc event map ---------------------------------------

type Orders = { "order.created": { id: number }; "order.shipped": { id: number; carrier: string } };

export function adHoc(): tidings.Client<Orders> {
  const client = tidings.createClient<Orders>({ url: "/rt", eventNames: ["order.created", "order.shipped"] });
  client.subscribe({
    channels: ["shop:1"],
    events: ["order.created"],
    onData(envelope) {
      assertType<Equal<typeof envelope, tidings.Envelope<Orders, "order.created">>>();
      assertType<Equal<typeof envelope.data, { id: number }>>();
      return envelope.data.id;
    },
    onReady: () => undefined,
  });
  client.subscribe({
    channels: ["shop:1"],
    onData(envelope) {
      if (envelope.event === "order.shipped") return envelope.data.carrier;
      // @ts-expect-error: narrowed to order.created, which has no `carrier`
      return envelope.data.carrier;
    },
  });
  client.subscribe({
    channels: ["shop:1"],
    // @ts-expect-error: an event of another schema
    events: ["chat.message"],
    onData() {},
  });
  client.subscribe({
    channels: ["shop:1"],
    onData() {},
    // @ts-expect-error: `onReady` is called with nothing, and returns nothing of use
    onReady: (info: string) => info,
  });
  assertType<Equal<tidings.EventName<Orders>, "order.created" | "order.shipped">>();
  assertType<Equal<tidings.Payload<Orders, "order.shipped">["carrier"], string>>();
  return client;
}

// Without a map, anything goes, untyped.
export function untyped(): tidings.Client {
  const client = tidings.createClient({ url: "/rt", transport: "fetch" });
  client.subscribe({
    channels: ["x"],
    onData(envelope) {
      assertType<Equal<typeof envelope.event, string>>();
      assertType<Equal<typeof envelope.data, unknown>>();
    },
  });
  return client;
}

// --- what must not compile ---------------------------------------------------------------

// @ts-expect-error: not an event of the schema
export const badName: EventName = "chat.nope";

// @ts-expect-error: `text` is a string
export const badType: ChatMessage = { text: 1, user: "ann" };

// @ts-expect-error: `user` is required
export const missing: ChatMessage = { text: "hi" };

// @ts-expect-error: `additionalProperties: false` gives a closed type
export const extra: ChatMessage = { text: "hi", user: "ann", colour: "red" };

// @ts-expect-error: not one of the enum's values
export const busy: Availability = "busy";

// @ts-expect-error: the payload is a string, not an object
export const objectAlert: NotificationAlert = { text: "x" };

export const mismatched: Envelope = {
  id: "1-0",
  channel: "room:1",
  event: "chat.typing",
  // @ts-expect-error: a chat.message payload under the chat.typing event
  data: { text: "hi", user: "ann" },
};

export function withoutNarrowing(envelope: Envelope): unknown {
  // @ts-expect-error: `data` may be a notification.alert string, which has no `user`
  return envelope.data.user;
}

export function afterNarrowing(envelope: Envelope): unknown {
  if (envelope.event === "chat.typing") {
    // @ts-expect-error: narrowed to ChatTyping, which has no `text`
    return envelope.data.text;
  }
  return undefined;
}

export function wrongEnvelopeEvent(): Envelope<"chat.message"> {
  // @ts-expect-error: Envelope<"chat.message"> only admits that event
  return { id: "1-0", channel: "c", event: "chat.typing", data: { user: "ann", active: true } };
}
