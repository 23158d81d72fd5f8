// Type-level tests for the generated event types, checked by `npm run typecheck`.
//
// Every `@ts-expect-error` line below must be a type error: tsc fails with "Unused
// '@ts-expect-error' directive" if a change to the generator makes one of them compile.
import { EVENT_NAMES, isEventName } from "../src/index.js";
import type {
  Availability,
  ChatMessage,
  ChatTyping,
  Envelope,
  EventMap,
  EventName,
  NotificationAlert,
  Payload,
  PresenceStatus,
  UserName,
} from "../src/index.js";

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
  return isEventName(name) ? name : undefined;
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
