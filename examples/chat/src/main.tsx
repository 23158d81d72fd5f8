import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { RealtimeProvider } from "./tidings/react.js";
import { App } from "./App.js";
import "./style.css";

const room = new URLSearchParams(location.search).get("room") || "room:1";
// `#key=<emit key>` (as the server prints it) shows a form that emits through POST /emit.
const emitKey = new URLSearchParams(location.hash.slice(1)).get("key") ?? undefined;

const root = document.getElementById("root");
if (!root) throw new Error("no #root element");
createRoot(root).render(
  <StrictMode>
    {/* Served by tidings itself at /app/: same origin, so the API is at "". */}
    <RealtimeProvider url="">
      <App room={room} emitKey={emitKey} />
    </RealtimeProvider>
  </StrictMode>,
);
