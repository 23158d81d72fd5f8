import { useEffect, useRef, useState, type FormEvent } from "react";
import type { ResetInfo } from "@tidings/client";
import { useChatMessage, useHistory, useNotificationAlert, usePresence, useStatus } from "./tidings/react.js";

export interface AppProps {
  /** The chat channel, e.g. `room:1`. */
  room: string;
  /** The emit key; without it the page only watches. */
  emitKey: string | undefined;
  /** Shown to the others in the room (presence, WebSocket transport); without it, watch only. */
  user?: string | undefined;
}


const ALERTS = "alerts";

export function App({ room, emitKey, user }: AppProps) {
  const status = useStatus();
  // Who is in the room: empty unless the server gives the room presence (--presence 'room:*').
  // The schema's `presence` entry for room:* types the members' data ({ user }).
  const here = usePresence(room as `room:${string}`, user ? { join: { user } } : {});
  const [alert, setAlert] = useState("");
  const [resets, setResets] = useState(0);
  const countReset = (_info: ResetInfo) => setResets((n) => n + 1);

  // The inbox pattern: the newest 100 messages from history, then every new one live; after a
  // reset (history trimmed past our cursor) the list reloads.
  const messages = useHistory(room, { limit: 100, events: ["chat.message"], onReset: countReset });
  useNotificationAlert(ALERTS, (text) => setAlert(text), { onReset: countReset });

  // How often each message was handed to this page, by id, as `window.tidingsDeliveries`: the
  // list above merges by id and would hide a duplicate, so the browser test checks these.
  const deliveries = useRef(new Map<string, number>());
  useChatMessage(room, (_message, envelope) => {
    deliveries.current.set(envelope.id, (deliveries.current.get(envelope.id) ?? 0) + 1);
    (window as unknown as { tidingsDeliveries: Record<string, number> }).tidingsDeliveries =
      Object.fromEntries(deliveries.current);
  });

  const list = useRef<HTMLUListElement>(null);
  useEffect(() => {
    const el = list.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [messages.entries]);

  return (
    <main>
      <header>
        <h1>
          <span className="room">{room}</span>
          <span className="brand">tidings</span>
        </h1>
        <div className="meta">
          <span className={`status ${status}`} data-testid="status">
            {status}
          </span>
          <span className="resets" title="tidings.reset frames seen: history was trimmed past this page's cursor">
            resets <span data-testid="resets">{resets}</span>
          </span>
        </div>
      </header>

      {here.members.length > 0 && (
        <ul className="present" data-testid="present" aria-label="in the room">
          {here.members.map((m) => (
            <li key={m.id}>{m.data?.user ?? m.name ?? m.id}</li>
          ))}
        </ul>
      )}

      <div className="alert" role="status" data-testid="alert">
        {alert}
      </div>

      <section className="chat">
        {messages.status === "loading" && messages.entries.length === 0 && <p className="hint">Loading history…</p>}
        {messages.status === "error" && (
          <p className="hint error">
            History did not load.{" "}
            <button type="button" onClick={() => void messages.reload()}>
              Retry
            </button>
          </p>
        )}
        {messages.status === "ready" && messages.entries.length === 0 && (
          <p className="hint">No messages in {room} yet.</p>
        )}
        <ul data-testid="messages" ref={list}>
          {messages.entries.map((m) => (
            <li key={m.id} data-id={m.id} title={timeOf(m.id)}>
              <b>{m.data.user}</b>: {m.data.text}
            </li>
          ))}
        </ul>
      </section>

      {emitKey !== undefined && <Composer room={room} emitKey={emitKey} />}
    </main>
  );
}

/** Posts `chat.message`s through `POST /emit`; they come back through the stream like any other. */
function Composer({ room, emitKey }: { room: string; emitKey: string }) {
  const [user, setUser] = useState("ada");
  const [text, setText] = useState("");
  const [problem, setProblem] = useState("");

  const send = async (e: FormEvent) => {
    e.preventDefault();
    if (!text.trim()) return;
    setProblem("");
    try {
      // The API is at the origin's root, not under /app/.
      const response = await fetch("/emit", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${emitKey}` },
        body: JSON.stringify({ channel: room, event: "chat.message", data: { user, text } }),
      });
      if (response.ok) {
        setText("");
        return;
      }
      const body = (await response.json().catch(() => ({}))) as { message?: string };
      setProblem(body.message ?? `${response.status} ${response.statusText}`);
    } catch (cause) {
      setProblem(String(cause));
    }
  };

  return (
    <form className="composer" onSubmit={(e) => void send(e)}>
      <input aria-label="name" className="user" value={user} onChange={(e) => setUser(e.target.value)} />
      <input
        aria-label="message"
        className="text"
        placeholder={`Message ${room}`}
        value={text}
        onChange={(e) => setText(e.target.value)}
      />
      <button type="submit">Send</button>
      {problem && <p className="hint error">{problem}</p>}
    </form>
  );
}

/** A stream id starts with the milliseconds it was stored at. */
function timeOf(id: string): string {
  const ms = Number(id.split("-")[0]);
  return Number.isFinite(ms) ? new Date(ms).toLocaleString() : id;
}
