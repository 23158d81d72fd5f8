// The browser end-to-end suite (test/e2e): real tidings processes on a real redis-server, the built
// demo app in Chromium. Run with `npx vitest run --config vitest.e2e.config.ts` from clients/.
// One fork, one file at a time: the suite starts and kills processes and owns its ports.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/e2e/**/*.test.ts"],
    environment: "node",
    pool: "forks",
    maxWorkers: 1,
    fileParallelism: false,
    // beforeAll may build the demo and the binary (a no-op after `cargo test`, but the shared
    // target dir can make it wait on cargo's lock).
    hookTimeout: 300_000,
    testTimeout: 60_000,
    teardownTimeout: 30_000,
    // The suite skips itself without this, so a run of the unit config (test/**) does not start it.
    env: { TIDINGS_E2E: "1" },
  },
});
