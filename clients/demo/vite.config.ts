// The demo chat app. From `clients/`:
//
//   npx vite build demo      # → demo/dist, served by `tidings --app-dir clients/demo/dist` at /app/
//   npx vite demo            # dev server; proxies the API to a tidings server on 127.0.0.1:3000
//
// It imports the package by name, as an app would; the aliases point at the sources.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const src = (file: string) => fileURLToPath(new URL(`../src/${file}`, import.meta.url));
const api = process.env.TIDINGS_URL ?? "http://127.0.0.1:3000";

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/app/",
  resolve: {
    alias: [
      { find: /^@tidings\/client\/react$/, replacement: src("react.ts") },
      { find: /^@tidings\/client$/, replacement: src("index.ts") },
    ],
  },
  oxc: { jsx: { runtime: "automatic" } },
  build: { outDir: "dist", emptyOutDir: true },
  server: {
    proxy: Object.fromEntries(["/realtime", "/history", "/emit"].map((path) => [path, api])),
  },
});
