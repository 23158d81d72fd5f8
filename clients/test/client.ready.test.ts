// `onReady` against a real server: called once per subscription, when a connection that covers it
// is confirmed (`tidings.ready`), so an event emitted from then on is delivered.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Client, Envelope } from "./generated/index.js";
import { Collector, KINDS, makeClient, uniqueChannel, waitFor } from "./support/client.js";
import { sleep, startServer, type Server } from "./support/processes.js";
import { TcpProxy } from "./support/proxy.js";

let server: Server;
let proxy: TcpProxy;
const clients: Client[] = [];

beforeAll(async () => {
  server = await startServer();
  proxy = await TcpProxy.start(server.port);
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  proxy.refuse(false);
});
afterAll(async () => {
  await proxy?.close();
  await server?.stop();
});

/**
 * A subscription that records its envelopes and how often `onReady` was called; `then` runs
 * inside `onReady` (to emit with no delay at all).
 */
function watch(client: Client, channels: readonly string[], events?: Envelope["event"][], then?: () => void) {
  const got: Envelope[] = [];
  const state = { ready: 0, got, unsubscribe: () => {} };
  state.unsubscribe = client.subscribe({
    channels,
    ...(events ? { events } : {}),
    onData: (e) => got.push(e),
    onReady: () => {
      state.ready += 1;
      then?.();
    },
  });
  return state;
}

describe.each(KINDS)("%s transport", (kind) => {
  it("an event emitted as soon as onReady fires is delivered, on a first connection and on every re-open", async () => {
    const { client: c, rec } = makeClient(kind, server.url);
    clients.push(c);
    // Each new channel re-opens the connection; emit from inside `onReady`, with no delay at all.
    for (let i = 0; i < 6; i++) {
      const ch = uniqueChannel(`ready${i}`);
      const got: string[] = [];
      let sent: Promise<string> | undefined;
      c.subscribe({
        channels: [ch],
        ...(i % 2 === 1 ? { events: ["chat.message" as const] } : {}),
        onData: (e) => got.push(e.id),
        onReady: () => {
          sent = server.say(ch, `first ${i}`);
        },
      });
      await waitFor(() => sent !== undefined, `onReady of subscription ${i}`);
      const id = await sent;
      await waitFor(() => got.length === 1, `the event emitted at onReady of subscription ${i}`);
      expect(got).toEqual([id]);
    }
    expect(rec.connections).toBe(6);
  });

  it("joining a ready connection that covers it: onReady in a microtask, no new connection", async () => {
    const ch = uniqueChannel("join");
    const { client: c, rec } = makeClient(kind, server.url);
    clients.push(c);
    const first = watch(c, [ch]); // no filter: the connection carries every event
    await waitFor(() => first.ready === 1, "first ready");

    const second = watch(c, [ch], ["chat.typing"]);
    expect(second.ready).toBe(0); // not during subscribe
    await Promise.resolve();
    await Promise.resolve();
    expect(second.ready).toBe(1);
    expect(rec.connections).toBe(1);

    const id = await server.emit(ch, "chat.typing", { user: "ann", active: true });
    await waitFor(() => second.got.length === 1 && first.got.length === 1, "the typing event on both");
    expect(second.got.map((e) => e.id)).toEqual([id]);
    expect(first.ready).toBe(1);
  });

  it("a subscription the connection does not cover waits for the re-opened one", async () => {
    const ch = uniqueChannel("cover");
    const { client: c, rec } = makeClient(kind, server.url);
    clients.push(c);
    const messages = watch(c, [ch], ["chat.message"]);
    await waitFor(() => messages.ready === 1, "first ready");

    // Same channel, another event: the connection's filter does not hold it.
    let sent: Promise<string> | undefined;
    const typing = watch(c, [ch], ["chat.typing"], () => {
      sent = server.emit(ch, "chat.typing", { user: "ann", active: false });
    });
    await waitFor(() => typing.ready === 1, "ready on the re-opened connection");
    expect(rec.connections).toBe(2);
    const id = await sent;
    await waitFor(() => typing.got.length === 1, "the typing event");
    expect(typing.got.map((e) => e.id)).toEqual([id]);
    // The re-open does not make the first one ready again.
    expect(messages.ready).toBe(1);
  });

  it("is not called again after a reconnect", async () => {
    const ch = uniqueChannel("reconnect");
    const { client: c, rec } = makeClient(kind, proxy.url);
    clients.push(c);
    const sub = watch(c, [ch]);
    await waitFor(() => sub.ready === 1, "ready");
    proxy.dropAll();
    await waitFor(() => rec.connections >= 2 && c.status === "connected", "connected again");
    const id = await server.say(ch, "after the drop");
    await waitFor(() => sub.got.length === 1, "the event after the drop");
    expect(sub.got.map((e) => e.id)).toEqual([id]);
    expect(sub.ready).toBe(1);
  });

  it("is never called after unsubscribing", async () => {
    const ch = uniqueChannel("gone");
    const { client: c } = makeClient(kind, server.url);
    clients.push(c);
    const keep = new Collector(c, [ch]);
    await waitFor(() => c.status === "connected", "connected");

    // Unsubscribed before the microtask that would have announced it.
    const early = watch(c, [ch]);
    early.unsubscribe();
    // Unsubscribed while its connection is being opened.
    const other = uniqueChannel("gone-other");
    const late = watch(c, [other]);
    // Microtasks only: the re-sync has started the new connection, no answer can be back yet.
    for (let i = 0; i < 3; i++) await Promise.resolve();
    expect(c.status).toBe("connecting");
    late.unsubscribe();
    await sleep(300);
    expect(c.status).toBe("connected");
    expect(early.ready).toBe(0);
    expect(late.ready).toBe(0);
    keep.unsubscribe();
  });
});
