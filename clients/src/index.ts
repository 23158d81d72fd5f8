// @tidings/client: typed realtime events over Server-Sent Events or WebSocket.
//
// The package knows no schema: everything is generic over the app's `EventMap`. tidings-codegen
// writes, into the app, a folder that binds it to the app's schema (`createClient`, the event
// types, and React hooks or Svelte functions per event).
export type { Envelope, EventMap, EventName, Payload } from "./types.js";
export { createClient, backoffDelay, DEFAULT_BACKOFF, STALL_FACTOR } from "./client.js";
export type {
  Backoff,
  Client,
  ClientOptions,
  EmitOptions,
  Emitted,
  HistoryOptions,
  HistoryPage,
  Member,
  PresenceOptions,
  ResetInfo,
  Status,
  SubscribeOptions,
  TokenFunction,
  TokenReason,
} from "./client.js";
export { TidingsError, parseRetryAfter } from "./errors.js";
export { compareIds, formatCursor, idOf, parseCursor } from "./cursor.js";
export { matchesFilter } from "./filter.js";
export type { Filter, FilterTest } from "./filter.js";
export { eventSourceTransport, fetchTransport, watchNetwork, webSocketTransport } from "./transport.js";
export type {
  Connection,
  ConnectOptions,
  EventSourceConstructor,
  EventSourceLike,
  Frame,
  NetworkHandlers,
  Transport,
  TransportHandlers,
  WebSocketConstructor,
  WebSocketLike,
} from "./transport.js";
