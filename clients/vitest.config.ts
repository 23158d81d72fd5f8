import { defineConfig } from "vitest/config";

export default defineConfig({
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
