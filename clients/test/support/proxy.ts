// A TCP proxy between the client and the server: the network that drops. `dropAll()` destroys
// every open connection (what a server crash, a load balancer or a flaky link does), `freezeAll()`
// stops forwarding the server's bytes on every open connection without closing either side (a
// NAT that forgot the flow, a laptop asleep), `refuse()` makes new connections fail at once, and
// the head of the first request on each connection is recorded so tests can look at what the
// client sent.
import net from "node:net";

export interface RequestHead {
  method: string;
  path: string;
  /** Header names lower-cased. */
  headers: Record<string, string>;
}

export class TcpProxy {
  /** The upstream port; may be changed to point the proxy at another server. */
  target: number;
  /** Connections accepted and forwarded so far. */
  forwarded = 0;
  /** Connections destroyed on arrival while refusing. */
  refused = 0;
  readonly requests: RequestHead[] = [];
  private refusing = false;
  private readonly sockets = new Set<net.Socket>();
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  private readonly server: net.Server;
  private port = 0;

  private constructor(target: number) {
    this.target = target;
    this.server = net.createServer((socket) => this.accept(socket));
  }

  static async start(target: number): Promise<TcpProxy> {
    const proxy = new TcpProxy(target);
    await new Promise<void>((resolve, reject) => {
      proxy.server.once("error", reject);
      proxy.server.listen(0, "127.0.0.1", () => resolve());
    });
    const address = proxy.server.address();
    proxy.port = typeof address === "object" && address ? address.port : 0;
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Open connections (client and upstream sides count separately). */
  get open(): number {
    return this.sockets.size;
  }

  /** While on, every new connection is closed as soon as it is accepted. */
  refuse(on: boolean): void {
    this.refusing = on;
  }

  /** Destroys every open connection, both sides; returns how many client connections it cut. */
  dropAll(): number {
    let cut = 0;
    for (const socket of this.sockets) {
      socket.destroy();
      cut += 1;
    }
    this.sockets.clear();
    return Math.ceil(cut / 2);
  }

  /**
   * Stops forwarding what the server sends on every open connection, and stops reading it (so
   * the server's writes back up), closing nothing: the half-open link a client cannot see.
   * Connections opened afterwards work. Returns how many connections it froze.
   */
  freezeAll(): number {
    let frozen = 0;
    for (const pair of this.pairs) {
      pair.upstream.unpipe(pair.client);
      pair.upstream.pause();
      frozen += 1;
    }
    this.pairs.clear();
    return frozen;
  }

  /** The recorded first requests whose path starts with `prefix`. */
  requestsTo(prefix: string): RequestHead[] {
    return this.requests.filter((r) => r.path.startsWith(prefix));
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    if (this.refusing) {
      this.refused += 1;
      client.destroy();
      return;
    }
    this.forwarded += 1;
    const upstream = net.connect(this.target, "127.0.0.1");
    this.sockets.add(client);
    this.sockets.add(upstream);
    const pair = { client, upstream };
    this.pairs.add(pair);
    const teardown = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
      this.pairs.delete(pair);
    };
    client.on("error", teardown).on("close", teardown);
    upstream.on("error", teardown).on("close", teardown);
    let head = "";
    let sniffing = true;
    client.on("data", (chunk: Buffer) => {
      if (!sniffing) return;
      head += chunk.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end >= 0 || head.length > 64 * 1024) {
        sniffing = false;
        const parsed = parseHead(head.slice(0, end >= 0 ? end : head.length));
        if (parsed) this.requests.push(parsed);
      }
    });
    client.pipe(upstream);
    upstream.pipe(client);
  }
}

function parseHead(text: string): RequestHead | undefined {
  const [line = "", ...rest] = text.split("\r\n");
  const [method, path] = line.split(" ");
  if (!method || !path) return undefined;
  const headers: Record<string, string> = {};
  for (const h of rest) {
    const colon = h.indexOf(":");
    if (colon > 0) headers[h.slice(0, colon).trim().toLowerCase()] = h.slice(colon + 1).trim();
  }
  return { method, path, headers };
}
