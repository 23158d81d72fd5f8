// Helpers over the generated event types. Everything here is derived from `EventMap`, so it
// follows `schema/events.json` without being regenerated.
import { EVENT_NAMES } from "./generated/events.js";
import type { EventMap, EventName } from "./generated/events.js";

/** The payload type of event `E`: `Payload<"chat.message">` is `ChatMessage`. */
export type Payload<E extends EventName> = EventMap[E];

const eventNames: ReadonlySet<string> = new Set(EVENT_NAMES);

/** Whether `name` is an event of the schema; narrows it to `EventName`. */
export function isEventName(name: string): name is EventName {
  return eventNames.has(name);
}
