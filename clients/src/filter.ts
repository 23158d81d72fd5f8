// Filters on payloads (see the README's "Filters"), typed by the app's event types, and their
// evaluation here: the server filters what it sends, and the client, which shares one
// connection between subscriptions, hands each subscription only what its own filter passes.

type Leaf = string | number | boolean | null;

/** A test on one value of type `V`: the value itself, or one operator. */
export type FilterTest<V> =
  | V
  | { eq: V }
  | { ne: V }
  | { in: readonly V[] }
  | { nin: readonly V[] }
  | { exists: boolean }
  | (V extends number ? { gt: number } | { gte: number } | { lt: number } | { lte: number } : never)
  | (V extends string ? { prefix: string } : never);

// The dotted paths of the leaf fields of `T` (at most 4 levels deep): `user`, `author.name`.
type Paths<T, D extends unknown[] = []> = D["length"] extends 4
  ? never
  : T extends Leaf | readonly unknown[]
    ? never
    : T extends object
      ? {
          [K in keyof T & string]-?: NonNullable<T[K]> extends Leaf
            ? K
            : NonNullable<T[K]> extends readonly unknown[]
              ? never
              : `${K}.${Paths<NonNullable<T[K]>, [...D, 1]>}`;
        }[keyof T & string]
      : never;

// The type at path `P` in `T`, over every member of a union.
type At<T, P extends string> = T extends unknown
  ? P extends `${infer K}.${infer R}`
    ? K extends keyof T
      ? At<NonNullable<T[K]>, R>
      : never
    : P extends keyof T
      ? NonNullable<T[P]>
      : never
  : never;

/**
 * A filter on payloads of type `P` (a union of the subscription's payload types) and events
 * `E`: field paths of `P` with values of their types, `event`, `channel`, `and`, `or`, `not`.
 * A path or value type the payloads do not have is a compile error (and the server refuses it
 * too).
 *
 * @example
 * const f: Filter<ChatMessage> = { user: "ada", text: { prefix: "hi" } };
 */
export type Filter<P = unknown, E extends string = string> = {
  [K in Paths<P>]?: FilterTest<At<P, K> & Leaf>;
} & {
  event?: FilterTest<E>;
  channel?: FilterTest<string>;
  and?: readonly Filter<P, E>[];
  or?: readonly Filter<P, E>[];
  not?: Filter<P, E>;
};

type AnyFilter = Record<string, unknown>;

// JSON values the server compares: strings, numbers (1 and 1.0 are one number), booleans, null.
const same = (a: unknown, b: unknown): boolean => a === b;

function test(t: unknown, v: unknown, present: boolean): boolean {
  if (t === null || typeof t !== "object") return present && same(v, t);
  const [op, arg] = Object.entries(t as Record<string, unknown>)[0] ?? [];
  const num = (f: (n: number) => boolean) => present && typeof v === "number" && typeof arg === "number" && f(v);
  switch (op) {
    case "eq":
      return present && same(v, arg);
    case "ne":
      return !(present && same(v, arg));
    case "in":
      return present && Array.isArray(arg) && arg.some((x) => same(v, x));
    case "nin":
      return !(present && Array.isArray(arg) && arg.some((x) => same(v, x)));
    case "exists":
      return present === arg;
    case "gt":
      return num((n) => n > (arg as number));
    case "gte":
      return num((n) => n >= (arg as number));
    case "lt":
      return num((n) => n < (arg as number));
    case "lte":
      return num((n) => n <= (arg as number));
    case "prefix":
      return present && typeof v === "string" && typeof arg === "string" && v.startsWith(arg);
    default:
      return false;
  }
}

/** Whether an event passes `filter`, as the server decides it. */
export function matchesFilter(filter: AnyFilter, channel: string, event: string, data: unknown): boolean {
  for (const [key, value] of Object.entries(filter)) {
    let ok: boolean;
    if (key === "and") ok = (value as AnyFilter[]).every((f) => matchesFilter(f, channel, event, data));
    else if (key === "or") ok = (value as AnyFilter[]).some((f) => matchesFilter(f, channel, event, data));
    else if (key === "not") ok = !matchesFilter(value as AnyFilter, channel, event, data);
    else if (key === "event") ok = test(value, event, true);
    else if (key === "channel") ok = test(value, channel, true);
    else {
      let v: unknown = data;
      let present = true;
      for (const part of key.split(".")) {
        if (v !== null && typeof v === "object" && !Array.isArray(v) && part in (v as object)) {
          v = (v as Record<string, unknown>)[part];
        } else {
          present = false;
          break;
        }
      }
      ok = test(value, v, present);
    }
    if (!ok) return false;
  }
  return true;
}
