// @tidings/client: typed realtime events over Server-Sent Events.
//
// `generated/events.ts` is written by tidings-codegen from `schema/events.json`; regenerate it
// with `TIDINGS_BLESS=1 cargo test --test codegen` from the repository root.
export * from "./generated/events.js";
export * from "./types.js";
export { createClient, backoffDelay, DEFAULT_BACKOFF } from "./client.js";
export type {
  Backoff,
  Client,
  ClientOptions,
  HistoryOptions,
  ResetInfo,
  Status,
  SubscribeOptions,
  TokenFunction,
  TokenReason,
} from "./client.js";
export { TidingsError, parseRetryAfter } from "./errors.js";
export { compareIds, formatCursor, parseCursor } from "./cursor.js";
export { eventSourceTransport, fetchTransport } from "./transport.js";
export type { Connection, ConnectOptions, EventSourceConstructor, EventSourceLike, Frame, Transport, TransportHandlers } from "./transport.js";
