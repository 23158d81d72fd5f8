import { useState, type FormEvent } from "react";
import { useHistory, useOrderStatus, useStatus, useStockLow } from "./tidings/react.js";
import type { OrderPlaced, Status } from "./tidings/index.js";

/** What the page has seen, in order: the e2e test reads it to check `ready` came first. */
type LogLine = { at: number; what: string };

export function App() {
  const connection = useStatus();
  const [log, setLog] = useState<LogLine[]>([]);
  const note = (what: string) => setLog((l) => [...l, { at: Date.now(), what }]);
  const [statuses, setStatuses] = useState<Record<number, { status: Status; carrier?: string }>>({});
  const [lowStock, setLowStock] = useState<string>("");

  // Every order placed, newest 50: history first, then live. `ready` turns true once the server
  // confirmed the subscription: an order placed from then on will show up.
  const orders = useHistory("orders", {
    limit: 50,
    events: ["order.placed"],
  });
  // One generated hook per event; the payload is typed by the schema (`OrderStatus`).
  const { ready } = useOrderStatus(
    "orders",
    (change, envelope) => {
      note(`${envelope.event} #${change.id} ${change.status}`);
      setStatuses((s) => ({ ...s, [change.id]: { status: change.status, ...(change.carrier ? { carrier: change.carrier } : {}) } }));
    },
    { onReady: () => note("ready") },
  );
  useStockLow("orders", (low) => setLowStock(`${low.sku}: ${low.left} left`));

  return (
    <main>
      <header>
        <h1>orders</h1>
        <span className={`status ${connection}`} data-testid="status">
          {connection}
        </span>
        <span data-testid="ready">{ready ? "live" : "subscribing…"}</span>
      </header>
      {lowStock && (
        <p className="alert" role="status" data-testid="stock">
          Low stock: {lowStock}
        </p>
      )}
      <OrderForm ready={ready} onPlaced={(id) => note(`placed #${id}`)} />
      <ul data-testid="orders">
        {orders.entries.map((e) => (
          <Order key={e.id} order={e.data} state={statuses[e.data.id]} />
        ))}
      </ul>
      <ol data-testid="log" className="log">
        {log.map((l, i) => (
          <li key={i}>{l.what}</li>
        ))}
      </ol>
    </main>
  );
}

function Order({ order, state }: { order: OrderPlaced; state: { status: Status; carrier?: string } | undefined }) {
  const line = order.lines[0];
  return (
    <li data-order={order.id}>
      <b>#{order.id}</b> {order.customer.name}: {line ? `${line.qty} × ${line.sku}` : "(no lines)"} ·{" "}
      {(order.total_cents / 100).toFixed(2)} € · <span className="state">{state?.status ?? "paid"}</span>
      {state?.carrier && <span className="carrier"> via {state.carrier}</span>}
    </li>
  );
}

/** Posts to the app's own API; the server emits the typed event. */
function OrderForm({ ready, onPlaced }: { ready: boolean; onPlaced: (id: number) => void }) {
  const [customer, setCustomer] = useState("ada");
  const [sku, setSku] = useState("mug-1");
  const [qty, setQty] = useState(1);
  const [problem, setProblem] = useState("");

  const place = async (e: FormEvent) => {
    e.preventDefault();
    setProblem("");
    const response = await fetch("/api/orders", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ customer, sku, qty }),
    });
    const body = (await response.json().catch(() => ({}))) as { id?: number; message?: string };
    if (response.ok && body.id !== undefined) onPlaced(body.id);
    else setProblem(body.message ?? `${response.status} ${response.statusText}`);
  };

  return (
    <form onSubmit={(e) => void place(e)}>
      <input aria-label="customer" value={customer} onChange={(e) => setCustomer(e.target.value)} />
      <input aria-label="sku" value={sku} onChange={(e) => setSku(e.target.value)} />
      <input aria-label="qty" type="number" min={1} value={qty} onChange={(e) => setQty(Number(e.target.value))} />
      <button type="submit" disabled={!ready}>
        Place order
      </button>
      {problem && <p className="error">{problem}</p>}
    </form>
  );
}
