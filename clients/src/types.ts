// The types every part of the package is generic over. The package knows no schema: an app's
// generated code (tidings-codegen) declares its `EventMap` and binds these types to it.

/**
 * An app's events: wire name (`namespace.event`) → payload type. tidings-codegen writes one for a
 * schema as a type alias (an interface would not fit the index signature):
 *
 * @example
 * type EventMap = { "order.created": { id: number }; "order.shipped": { id: number; carrier: string } };
 * const client = createClient<EventMap>({ url: "/rt", eventNames: ["order.created", "order.shipped"] });
 */
export type EventMap = Record<string, unknown>;

/** The wire name of an event of `M`. */
export type EventName<M extends EventMap> = keyof M & string;

/**
 * An event as delivered: `data` is typed by `event`, so checking `event` narrows `data`.
 * `Envelope<M>` is any event of `M`; `Envelope<M, "order.created">` only that one.
 */
export type Envelope<M extends EventMap, E extends EventName<M> = EventName<M>> = {
  [K in E]: { id: string; channel: string; event: K; data: M[K] };
}[E];

/** The payload type of event `E` of `M`. */
export type Payload<M extends EventMap, E extends EventName<M>> = M[E];
