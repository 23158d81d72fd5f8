import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const src = (file: string) => fileURLToPath(new URL(`./src/${file}`, import.meta.url));

export default defineConfig({
  resolve: {
    // The package by name (as test/generated imports it) is its own sources, as in tsconfig.json.
    alias: [
      { find: /^@tidings\/client$/, replacement: src("index.ts") },
      { find: /^@tidings\/client\/react$/, replacement: src("react.ts") },
      { find: /^@tidings\/client\/svelte$/, replacement: src("svelte.ts") },
      { find: /^@tidings\/client\/history$/, replacement: src("history.ts") },
    ],
  },
  test: {
    include: ["test/**/*.test.ts"],
    // The browser suite has its own config (vitest.e2e.config.ts).
    exclude: ["test/e2e/**", "node_modules/**"],
    environment: "node",
    globalSetup: ["test/support/global-setup.ts"],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    // Two cores: files run two at a time, each with its own servers on free ports.
    maxWorkers: 2,
  },
});
