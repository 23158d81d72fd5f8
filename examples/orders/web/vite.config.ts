// The orders page. Build it with `npm run build -w examples/orders/web` (from the repository root)
// and serve it with the shop: `cargo run -p orders-example -- --web examples/orders/web/dist`;
// `npm run dev -w examples/orders/web` starts a dev server that proxies the API to the shop on
// 127.0.0.1:3002.
//
// `src/tidings/` is generated from ../schema/events.json by ../build.rs on every cargo build of
// the shop (files are rewritten only when the schema changes them).
import { fileURLToPath } from "node:url";
import { defaultClientConditions, defineConfig } from "vite";

const shop = process.env.ORDERS_URL ?? "http://127.0.0.1:3002";

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  // In this repository, `@tidings/client` is the workspace package's sources; an app installed
  // from npm needs no such line.
  resolve: { conditions: ["tidings-source", ...defaultClientConditions] },
  oxc: { jsx: { runtime: "automatic" } },
  build: { outDir: "dist", emptyOutDir: true },
  server: { proxy: { "/rt": shop, "/api": shop } },
});
