// The package knows no schema: a client created without `eventNames` listens for the events its
// subscriptions name. EventSource only dispatches the names it listens for, so there a
// subscription without `events` is refused; the fetch transport sees every frame and needs none.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import * as tidings from "@tidings/client";
import { EVENT_NAMES, type EventMap } from "./generated/index.js";
import { NodeEventSource, RecordingTransport, realTransport, uniqueChannel, waitFor } from "./support/client.js";
import { startServer, type Server } from "./support/processes.js";

let server: Server;
const clients: tidings.Client<EventMap>[] = [];

beforeAll(async () => {
  server = await startServer();
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});
afterAll(async () => {
  await server?.stop();
});

const CONTROL = [
  "tidings.ready",
  "tidings.reset",
  "tidings.lagged",
  "tidings.expired",
  "tidings.ping",
  "tidings.presence.snapshot",
  "tidings.presence.join",
  "tidings.presence.leave",
];

/** The generic `createClient`, without `eventNames`. */
function bare(options: Partial<tidings.ClientOptions> = {}): tidings.Client<EventMap> {
  const client = tidings.createClient<EventMap>({ url: server.url, backoff: { initialMs: 30, maxMs: 150 }, ...options });
  clients.push(client);
  return client;
}

describe("without eventNames, on the EventSource transport", () => {
  it("delivers what subscriptions that name their events ask for, and follows new names", async () => {
    const rec = new RecordingTransport(realTransport("eventsource"));
    const c = bare({ transport: rec.transport });
    const ch = uniqueChannel("names");
    const messages: string[] = [];
    const alerts: string[] = [];
    let ready = false;
    c.subscribe({
      channels: [ch],
      events: ["chat.message"],
      onData: (e) => messages.push(e.data.text),
      onReady: () => (ready = true),
    });
    await waitFor(() => ready, "ready");
    expect([...(rec.eventNames[0] ?? [])].sort()).toEqual(["chat.message", ...CONTROL].sort());
    await server.say(ch, "one");
    await waitFor(() => messages.length === 1, "the message");

    // Another event: the connection is re-opened, listening for both.
    let alertsReady = false;
    c.subscribe({
      channels: [ch],
      events: ["notification.alert"],
      onData: (e) => alerts.push(e.data),
      onReady: () => (alertsReady = true),
    });
    await waitFor(() => alertsReady, "ready for alerts");
    expect(rec.connections).toBe(2);
    expect([...(rec.eventNames[1] ?? [])].sort()).toEqual(["chat.message", "notification.alert", ...CONTROL].sort());
    await server.emit(ch, "notification.alert", "deploy at 5");
    await server.say(ch, "two");
    await waitFor(() => alerts.length === 1 && messages.length === 2, "the alert and the second message");
    expect(alerts).toEqual(["deploy at 5"]);
    expect(messages).toEqual(["one", "two"]);
  });

  it("refuses a subscription without `events`, naming the ways out", () => {
    for (const c of [
      bare({ transport: "eventsource", EventSource: NodeEventSource }),
      // A wrapper that keeps `namedEventsOnly` is refused the same way.
      bare({ transport: new RecordingTransport(realTransport("eventsource")).transport }),
    ]) {
      let error: unknown;
      try {
        c.subscribe({ channels: [uniqueChannel("refused")], onData() {} });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(tidings.TidingsError);
      const message = (error as Error).message;
      expect(message).toContain("eventNames");
      expect(message).toContain("createClient");
      expect(message).toContain("fetch");
      expect(c.status).toBe("disconnected"); // nothing was subscribed
    }
  });

  it("takes a subscription without `events` once `eventNames` are given", async () => {
    const c = bare({ transport: "eventsource", EventSource: NodeEventSource, eventNames: EVENT_NAMES });
    const ch = uniqueChannel("given");
    const got: string[] = [];
    let ready = false;
    c.subscribe({ channels: [ch], onData: (e) => got.push(e.event), onReady: () => (ready = true) });
    await waitFor(() => ready, "ready");
    await server.emit(ch, "presence.status", { user: "ann", status: "away" });
    await server.say(ch, "hi");
    await waitFor(() => got.length === 2, "both events");
    expect(got).toEqual(["presence.status", "chat.message"]);
  });
});

describe("without eventNames, on the fetch transport", () => {
  it("delivers every event to a subscription without `events`", async () => {
    const rec = new RecordingTransport(realTransport("fetch"));
    expect(rec.transport.namedEventsOnly).toBeUndefined();
    const c = bare({ transport: rec.transport });
    const ch = uniqueChannel("fetch");
    const got: string[] = [];
    let ready = false;
    c.subscribe({ channels: [ch], onData: (e) => got.push(e.event), onReady: () => (ready = true) });
    await waitFor(() => ready, "ready");
    expect([...(rec.eventNames[0] ?? [])].sort()).toEqual([...CONTROL].sort());
    await server.emit(ch, "notification.alert", "hello");
    await server.emit(ch, "chat.typing", { user: "ann", active: true });
    await waitFor(() => got.length === 2, "both events");
    expect(got).toEqual(["notification.alert", "chat.typing"]);
  });

  it("works with the named fetch transport too", async () => {
    const c = bare({ transport: "fetch" });
    const ch = uniqueChannel("fetch-named");
    const got: string[] = [];
    let ready = false;
    c.subscribe({ channels: [ch], onData: (e) => got.push(e.id), onReady: () => (ready = true) });
    await waitFor(() => ready, "ready");
    const id = await server.say(ch, "hi");
    await waitFor(() => got.length === 1, "the event");
    expect(got).toEqual([id]);
  });
});

it("eventSourceTransport is marked as seeing only the events it names", () => {
  expect(tidings.eventSourceTransport(NodeEventSource).namedEventsOnly).toBe(true);
  expect(tidings.fetchTransport(globalThis.fetch).namedEventsOnly).toBeUndefined();
});
