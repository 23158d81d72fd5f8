import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
// The generated, schema-bound React layer (written by ../build.rs from ../schema/events.json).
import { RealtimeProvider } from "./tidings/react.js";
import { App } from "./App.js";
import "./style.css";

const root = document.getElementById("root");
if (!root) throw new Error("no #root element");
createRoot(root).render(
  <StrictMode>
    {/* The Rust server nests tidings under /rt. */}
    <RealtimeProvider url="/rt">
      <App />
    </RealtimeProvider>
  </StrictMode>,
);
