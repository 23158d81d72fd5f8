// The demo chat app. Build it with `npm run build -w examples/chat` (from the repository root),
// then `cargo run --release -- --app-dir examples/chat/dist` serves it at /app/; `npm run dev -w
// examples/chat` starts a dev server that proxies the API to a tidings server on 127.0.0.1:3000.
//
// `src/tidings/` is generated from schema/events.json by the root build.rs (`--features demo`), or
// by `tidings codegen --schema schema/events.json --typescript examples/chat/src/tidings`.
import { fileURLToPath } from "node:url";
import { defaultClientConditions, defineConfig } from "vite";

const api = process.env.TIDINGS_URL ?? "http://127.0.0.1:3000";

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/app/",
  // In this repository, `@tidings/client` is the workspace package's sources; an app installed
  // from npm needs no such line.
  resolve: { conditions: ["tidings-source", ...defaultClientConditions] },
  oxc: { jsx: { runtime: "automatic" } },
  build: { outDir: "dist", emptyOutDir: true },
  server: {
    proxy: Object.fromEntries(["/realtime", "/history", "/emit"].map((path) => [path, api])),
  },
});
