// The inbox pattern (`createHistoryFeed`) and the Svelte store wrappers, against a fake client:
// this is ordering and bookkeeping logic; the real client is tested against a real server.
import { describe, expect, it, vi } from "vitest";
import { get, writable } from "svelte/store";
import type { HistoryOptions, ResetInfo, Status } from "../src/client.js";
import { createHistoryFeed, mergeEntries, type HistoryFeed } from "../src/history.js";
import { createHistoryStore, createRealtimeStore, type RealtimeOptions } from "../src/svelte.js";
import type { Client, Envelope, EventMap, SubscribeOptions } from "./generated/index.js";

interface PendingHistory {
  channel: string;
  options: HistoryOptions | undefined;
  resolve: (entries: Envelope[]) => void;
  reject: (error: unknown) => void;
}

/**
 * A client whose connection, events and history answers the test drives by hand. It calls
 * `onReady` as the real one does: once per subscription, when a connection covers its channels
 * (a microtask after `subscribe` when one does already), never after unsubscribing.
 */
function fakeClient() {
  const subs = new Set<SubscribeOptions>();
  const readied = new WeakSet<SubscribeOptions>();
  const listeners = new Set<(status: Status) => void>();
  const covered = new Set<string>();
  const requests: PendingHistory[] = [];
  let status: Status = "disconnected";

  const setStatus = (next: Status) => {
    status = next;
    for (const l of [...listeners]) l(next);
  };

  const announceReady = () => {
    if (status !== "connected") return;
    for (const sub of [...subs]) {
      if (readied.has(sub) || !subs.has(sub) || !sub.channels.every((c) => covered.has(c))) continue;
      readied.add(sub);
      sub.onReady?.();
    }
  };

  const client: Client = {
    get status() {
      return status;
    },
    error: undefined,
    subscribe(o) {
      const sub = o as unknown as SubscribeOptions;
      subs.add(sub);
      queueMicrotask(announceReady);
      return () => {
        subs.delete(sub);
      };
    },
    emit: () => Promise.reject(new Error("not used here")),
    historyPage: () => Promise.reject(new Error("not used here")),
    presence: () => () => {},
    onStatus(listener) {
      const l = (s: Status) => listener(s, undefined);
      listeners.add(l);
      return () => listeners.delete(l);
    },
    cursor: () => [...covered].map((c) => `${c}=0-0`).join(","),
    // Generic over the events asked for; the test hands back whatever entries it likes.
    history: ((channel: string, options?: HistoryOptions) =>
      new Promise<Envelope[]>((resolve, reject) => requests.push({ channel, options, resolve, reject }))) as Client["history"],
    close() {
      subs.clear();
      setStatus("disconnected");
    },
  };

  return {
    client,
    subs,
    requests,
    /** The server sent `tidings.ready` for a connection over `channels`. */
    connect(...channels: string[]) {
      for (const c of channels) covered.add(c);
      setStatus("connecting");
      setStatus("connected");
      announceReady();
    },
    setStatus,
    emit(envelope: Envelope) {
      for (const sub of [...subs]) {
        if (!sub.channels.includes(envelope.channel)) continue;
        if (sub.events && !sub.events.includes(envelope.event)) continue;
        sub.onData(envelope);
      }
    },
    reset(info: ResetInfo) {
      for (const sub of [...subs]) if (sub.channels.includes(info.channel)) sub.onReset?.(info);
    },
  };
}

const msg = (id: string, text = `m${id}`, channel = "room:1"): Envelope<"chat.message"> => ({
  id,
  channel,
  event: "chat.message",
  data: { user: "ann", text },
});
const typing = (id: string): Envelope<"chat.typing"> => ({
  id,
  channel: "room:1",
  event: "chat.typing",
  data: { user: "ann", active: true },
});
const ids = (feed: HistoryFeed<EventMap>) => feed.entries().map((e) => e.id);
const tick = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

describe("createHistoryFeed", () => {
  it("fetches history once the connection covers the channel, not before", async () => {
    const fake = fakeClient();
    const feed = createHistoryFeed(fake.client, "room:1", { limit: 20 }, () => {});
    expect(fake.subs.size).toBe(1);
    await tick();
    expect(fake.requests).toHaveLength(0);
    expect(feed.status).toBe("loading");

    fake.connect("alerts"); // a connection that does not hold the channel yet
    await tick();
    expect(fake.requests).toHaveLength(0);

    fake.connect("room:1");
    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]).toMatchObject({ channel: "room:1", options: { limit: 20 } });
  });

  it("starts at once on a connection that already covers the channel", async () => {
    const fake = fakeClient();
    fake.connect("room:1");
    createHistoryFeed(fake.client, "room:1", {}, () => {});
    expect(fake.requests).toHaveLength(0); // the subscription's re-sync comes first
    await tick();
    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]?.options).toEqual({ limit: 100 });
  });

  it("keeps live events that arrive before and while history loads, without duplicates", async () => {
    const fake = fakeClient();
    const onChange = vi.fn();
    const feed = createHistoryFeed(fake.client, "room:1", { limit: 10 }, onChange);

    fake.connect("room:1");
    fake.emit(msg("3-0")); // live, and also in the page below
    fake.emit(msg("4-0")); // live, after the page was read
    // Shown at once, before history answers.
    expect(ids(feed)).toEqual(["3-0", "4-0"]);
    expect(feed.status).toBe("loading");

    fake.requests[0]?.resolve([msg("1-0"), msg("2-0"), msg("3-0")]);
    await tick();
    expect(feed.status).toBe("ready");
    expect(ids(feed)).toEqual(["1-0", "2-0", "3-0", "4-0"]);

    fake.emit(msg("5-0"));
    expect(ids(feed)).toEqual(["1-0", "2-0", "3-0", "4-0", "5-0"]);

    // The same id again (cannot come from the client, but costs nothing): no change, no call.
    const calls = onChange.mock.calls.length;
    const before = feed.entries();
    fake.emit(msg("5-0"));
    fake.emit(msg("2-0"));
    expect(feed.entries()).toBe(before);
    expect(onChange).toHaveBeenCalledTimes(calls);
  });

  it("orders by stream id numerically, whatever the arrival order", async () => {
    const fake = fakeClient();
    const feed = createHistoryFeed(fake.client, "room:1", {}, () => {});
    fake.connect("room:1");
    fake.emit(msg("10-0"));
    fake.requests[0]?.resolve([msg("9-0"), msg("9-1"), msg("10-0")]);
    await tick();
    fake.emit(msg("10-2"));
    fake.emit(msg("100-0"));
    expect(ids(feed)).toEqual(["9-0", "9-1", "10-0", "10-2", "100-0"]);
  });

  it("keeps the newest `limit` entries", async () => {
    const fake = fakeClient();
    const feed = createHistoryFeed(fake.client, "room:1", { limit: 3 }, () => {});
    fake.connect("room:1");
    fake.emit(msg("5-0"));
    fake.requests[0]?.resolve([msg("2-0"), msg("3-0"), msg("4-0")]);
    await tick();
    expect(ids(feed)).toEqual(["3-0", "4-0", "5-0"]);
    fake.emit(msg("6-0"));
    fake.emit(msg("7-0"));
    expect(ids(feed)).toEqual(["5-0", "6-0", "7-0"]);
  });

  it("reloads from history on reset, keeping what arrives live meanwhile", async () => {
    const fake = fakeClient();
    const resets: ResetInfo[] = [];
    const statuses: string[] = [];
    const feed = createHistoryFeed(fake.client, "room:1", { onReset: (i) => resets.push(i) }, (f) =>
      statuses.push(f.status),
    );
    fake.connect("room:1");
    fake.requests[0]?.resolve([msg("1-0"), msg("2-0")]);
    await tick();
    expect(ids(feed)).toEqual(["1-0", "2-0"]);

    // Entries 3..6 were trimmed while this client was away.
    fake.reset({ channel: "room:1", oldest: "7-0" });
    expect(resets).toEqual([{ channel: "room:1", oldest: "7-0" }]);
    expect(feed.status).toBe("loading");
    expect(fake.requests).toHaveLength(2);
    fake.emit(msg("9-0")); // replayed after the reset, before the page arrives

    fake.requests[1]?.resolve([msg("7-0"), msg("8-0"), msg("9-0")]);
    await tick();
    expect(ids(feed)).toEqual(["7-0", "8-0", "9-0"]);
    // ready; loading (the reset); loading (9-0 arrived); ready.
    expect(statuses).toEqual(["ready", "loading", "loading", "ready"]);
    expect(feed.status).toBe("ready");
  });

  it("applies only the newest load when reloads overlap", async () => {
    const fake = fakeClient();
    const feed = createHistoryFeed(fake.client, "room:1", {}, () => {});
    fake.connect("room:1");
    void feed.reload();
    expect(fake.requests).toHaveLength(2);
    fake.requests[1]?.resolve([msg("2-0")]);
    await tick();
    fake.requests[0]?.resolve([msg("1-0")]); // stale
    await tick();
    expect(ids(feed)).toEqual(["2-0"]);
  });

  it("filters history and live events by `events`", async () => {
    const fake = fakeClient();
    const feed = createHistoryFeed(fake.client, "room:1", { events: ["chat.message"] }, () => {});
    expect(fake.subs.values().next().value?.events).toEqual(["chat.message"]);
    fake.connect("room:1");
    fake.emit(typing("3-0"));
    fake.requests[0]?.resolve([msg("1-0"), typing("2-0")]);
    await tick();
    expect(ids(feed)).toEqual(["1-0"]);
    const [first] = feed.entries();
    expect(first?.data.text).toBe("m1-0");
  });

  it("hands `events` and `filter` to the subscription and to the history read", async () => {
    const fake = fakeClient();
    const filter = { text: { prefix: "keep" } };
    const feed = createHistoryFeed(fake.client, "room:1", { events: ["chat.message"], filter, limit: 5 }, () => {});
    expect(fake.subs.values().next().value?.filter).toEqual(filter);
    fake.connect("room:1");
    await tick();
    expect(fake.requests[0]?.options).toEqual({ limit: 5, events: ["chat.message"], filter });
    // What the server sends passed; a page it did not filter is still held to the filter.
    fake.requests[0]?.resolve([msg("1-0", "keep 1"), msg("2-0", "drop 2")]);
    await tick();
    expect(feed.entries().map((e) => e.data.text)).toEqual(["keep 1"]);
  });

  it("reports a failed load, still takes live events, and recovers on reload", async () => {
    const fake = fakeClient();
    const feed = createHistoryFeed(fake.client, "room:1", {}, () => {});
    fake.connect("room:1");
    const boom = new Error("503");
    fake.requests[0]?.reject(boom);
    await tick();
    expect(feed.status).toBe("error");
    expect(feed.error).toBe(boom);
    fake.emit(msg("5-0"));
    expect(ids(feed)).toEqual(["5-0"]);

    const done = feed.reload();
    fake.requests[1]?.resolve([msg("4-0"), msg("5-0")]);
    await done;
    expect(feed.status).toBe("ready");
    expect(feed.error).toBeUndefined();
    expect(ids(feed)).toEqual(["4-0", "5-0"]);
  });

  it("stops on close: unsubscribed, and late answers change nothing", async () => {
    const fake = fakeClient();
    const onChange = vi.fn();
    const feed = createHistoryFeed(fake.client, "room:1", {}, onChange);
    fake.connect("room:1");
    feed.close();
    expect(fake.subs.size).toBe(0);
    fake.requests[0]?.resolve([msg("1-0")]);
    await tick();
    expect(feed.entries()).toEqual([]);
    expect(onChange).not.toHaveBeenCalled();
  });

  it("fetches once when ready, not again on a reconnect", async () => {
    const fake = fakeClient();
    createHistoryFeed(fake.client, "room:1", {}, () => {});
    fake.connect("room:1");
    fake.requests[0]?.resolve([msg("1-0")]);
    await tick();
    fake.setStatus("error");
    fake.connect("room:1");
    await tick();
    expect(fake.requests).toHaveLength(1);
  });

  it("never starts when closed before the connection covers the channel", async () => {
    const fake = fakeClient();
    const feed = createHistoryFeed(fake.client, "room:1", {}, () => {});
    feed.close();
    fake.connect("room:1");
    await tick();
    expect(fake.requests).toHaveLength(0);
  });
});

describe("mergeEntries", () => {
  const e = (id: string) => ({ id });
  it("returns the same array when nothing changes", () => {
    const base = [e("1-0"), e("2-0")];
    expect(mergeEntries(base, [], 10)).toBe(base);
    expect(mergeEntries(base, [e("1-0")], 10)).toBe(base);
    // Older than everything in a full list: dropped, not inserted then trimmed.
    expect(mergeEntries(base, [e("0-5")], 2)).toBe(base);
  });
  it("inserts in order and trims the oldest", () => {
    expect(mergeEntries([e("1-0"), e("3-0")], [e("2-0"), e("4-0"), e("2-0")], 3).map((x) => x.id)).toEqual([
      "2-0",
      "3-0",
      "4-0",
    ]);
  });
});

describe("svelte createRealtimeStore", () => {
  it("subscribes again only when channels, events, filter or enabled change", () => {
    const fake = fakeClient();
    const seen: string[] = [];
    const options = writable<RealtimeOptions<EventMap, "chat.message">>({
      channels: ["room:1"],
      events: ["chat.message"],
      onData: (m) => seen.push(`a:${m.data.text}`),
    });
    const store = createRealtimeStore(fake.client, options);
    const first = [...fake.subs][0];
    expect(first?.channels).toEqual(["room:1"]);

    // New callback, same selection: the subscription stays, the new callback is used.
    options.set({ channels: ["room:1"], events: ["chat.message"], onData: (m) => seen.push(`b:${m.data.text}`) });
    expect([...fake.subs]).toEqual([first]);
    fake.emit(msg("1-0", "hi"));
    expect(seen).toEqual(["b:hi"]);

    options.set({ channels: ["room:2"], events: ["chat.message"], onData: (m) => seen.push(`c:${m.data.text}`) });
    expect(fake.subs.size).toBe(1);
    expect([...fake.subs][0]?.channels).toEqual(["room:2"]);
    fake.emit(msg("2-0", "old room"));
    fake.emit(msg("3-0", "new room", "room:2"));
    expect(seen).toEqual(["b:hi", "c:new room"]);

    // A filter is part of the selection: by value, so an equal new object keeps the subscription.
    options.update((o) => ({ ...o, filter: { user: "ada" } }));
    const filtered = [...fake.subs][0];
    expect(filtered?.filter).toEqual({ user: "ada" });
    options.update((o) => ({ ...o, filter: { user: "ada" } }));
    expect([...fake.subs]).toEqual([filtered]);
    options.update((o) => ({ ...o, filter: { user: "bob" } }));
    expect([...fake.subs][0]?.filter).toEqual({ user: "bob" });

    options.update((o) => ({ ...o, enabled: false }));
    expect(fake.subs.size).toBe(0);
    store.destroy();
    options.update((o) => ({ ...o, enabled: true }));
    expect(fake.subs.size).toBe(0);
  });

  it("mirrors the client's status while enabled", () => {
    const fake = fakeClient();
    const store = createRealtimeStore(fake.client, { channels: ["room:1"] });
    expect(get(store.status)).toBe("disconnected");
    fake.connect("room:1");
    expect(get(store.status)).toBe("connected");
    fake.setStatus("error");
    expect(get(store.status)).toBe("error");
    store.destroy();

    fake.connect("room:1");
    const disabled = createRealtimeStore(fake.client, { channels: ["room:1"], enabled: false });
    expect(get(disabled.status)).toBe("disconnected");
    expect(fake.subs.size).toBe(0);
  });

  it("is ready once its subscription is, and not again until the new one is after a change", async () => {
    const fake = fakeClient();
    const readyCalls: string[] = [];
    const options = writable<RealtimeOptions<EventMap>>({ channels: ["room:1"], onReady: () => readyCalls.push("room:1") });
    const store = createRealtimeStore(fake.client, options);
    expect(get(store.ready)).toBe(false);
    fake.connect("room:1");
    expect(get(store.ready)).toBe(true);
    expect(readyCalls).toEqual(["room:1"]);

    // New callbacks only: still the same, ready subscription.
    options.set({ channels: ["room:1"], onReady: () => readyCalls.push("again") });
    expect(get(store.ready)).toBe(true);

    options.set({ channels: ["room:2"], onReady: () => readyCalls.push("room:2") });
    expect(get(store.ready)).toBe(false);
    await tick();
    expect(get(store.ready)).toBe(false); // room:2 is not covered yet
    fake.connect("room:2");
    expect(get(store.ready)).toBe(true);
    expect(readyCalls).toEqual(["room:1", "room:2"]);

    options.update((o) => ({ ...o, enabled: false }));
    expect(get(store.ready)).toBe(false);
    options.update((o) => ({ ...o, enabled: true }));
    expect(get(store.ready)).toBe(false);
    await tick(); // the connection covers room:2 already: ready after a microtask
    expect(get(store.ready)).toBe(true);
    store.destroy();
    expect(get(store.ready)).toBe(false);
  });

  it("createHistoryStore holds the feed's entries", async () => {
    const fake = fakeClient();
    const history = createHistoryStore(fake.client, "room:1", { events: ["chat.message"] });
    expect(get(history)).toEqual({ entries: [], status: "loading", error: undefined });
    fake.connect("room:1");
    fake.requests[0]?.resolve([msg("1-0")]);
    await tick();
    expect(get(history).status).toBe("ready");
    expect(get(history).entries.map((m) => m.data.text)).toEqual(["m1-0"]);
    history.destroy();
    expect(fake.subs.size).toBe(0);
  });
});
