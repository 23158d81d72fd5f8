// The browser end-to-end suites (test/e2e): the built chat demo against real tidings processes on a
// real redis-server, and the orders example against its own Rust server, in Chromium. Run with
// `npm run test:e2e` from clients/.
// One fork, one file at a time: each suite starts and kills processes and owns its ports.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/e2e/**/*.test.ts"],
    environment: "node",
    pool: "forks",
    maxWorkers: 1,
    fileParallelism: false,
    // beforeAll may build an app and a binary (a no-op after `cargo test`, but the shared target
    // dir can make it wait on cargo's lock); TIDINGS_BIN and ORDERS_BIN skip cargo.
    hookTimeout: 300_000,
    testTimeout: 60_000,
    teardownTimeout: 30_000,
  },
});
