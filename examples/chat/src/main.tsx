import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { RealtimeProvider } from "./tidings/react.js";
import { App } from "./App.js";
import "./style.css";

const query = new URLSearchParams(location.search);
const room = query.get("room") || "room:1";
// `?transport=websocket` uses GET /ws instead of Server-Sent Events; then `?user=<name>` shows
// this page to the others in the room (a server started with --presence 'room:*').
const transport = query.get("transport") === "websocket" ? "websocket" : undefined;
const user = query.get("user") ?? undefined;
// `#key=<emit key>` (as the server prints it) shows a form that emits through POST /emit.
const emitKey = new URLSearchParams(location.hash.slice(1)).get("key") ?? undefined;

const root = document.getElementById("root");
if (!root) throw new Error("no #root element");
createRoot(root).render(
  <StrictMode>
    {/* Served by tidings itself at /app/: same origin, so the API is at "". */}
    <RealtimeProvider url="" {...(transport ? { transport } : {})}>
      <App room={room} emitKey={emitKey} user={transport ? user : undefined} />
    </RealtimeProvider>
  </StrictMode>,
);
