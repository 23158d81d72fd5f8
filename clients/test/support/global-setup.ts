// vitest globalSetup: builds the tidings binary once, and hands the test files a directory where
// they record the pid of every process they spawn, so teardown can kill whatever a crashed test
// worker left behind.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    tidingsBin: string;
    pidDir: string;
  }
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

function buildServer(): string {
  const given = process.env.TIDINGS_BIN;
  if (given) {
    if (!existsSync(given)) throw new Error(`TIDINGS_BIN=${given} does not exist`);
    console.log(`[tidings tests] using TIDINGS_BIN=${given}`);
    return given;
  }
  // Where cargo puts it: CARGO_TARGET_DIR (relative to the repository) when set.
  const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(repoRoot, process.env.CARGO_TARGET_DIR) : path.join(repoRoot, "target");
  const bin = path.join(targetDir, "debug", "tidings");
  console.log(`[tidings tests] cargo build --bin tidings (in ${repoRoot}; may wait for the target-dir lock)…`);
  const started = Date.now();
  const result = spawnSync("cargo", ["build", "--bin", "tidings"], { cwd: repoRoot, stdio: ["ignore", "inherit", "inherit"] });
  if (result.error) throw new Error(`cannot run cargo: ${result.error.message}`);
  if (result.status !== 0) throw new Error(`cargo build --bin tidings failed with status ${String(result.status)}`);
  if (!existsSync(bin)) throw new Error(`cargo build succeeded but ${bin} is missing`);
  console.log(`[tidings tests] server binary ready in ${((Date.now() - started) / 1000).toFixed(1)} s: ${bin}`);
  return bin;
}

function killLeftovers(pidDir: string): void {
  if (!existsSync(pidDir)) return;
  for (const name of readdirSync(pidDir)) {
    const pid = Number(readFileSync(path.join(pidDir, name), "utf8"));
    if (!Number.isInteger(pid) || pid <= 0) continue;
    try {
      process.kill(pid, "SIGKILL");
      console.warn(`[tidings tests] killed leftover process ${pid} (${name})`);
    } catch {
      // already gone
    }
  }
  rmSync(pidDir, { recursive: true, force: true });
}

export default function setup(project: TestProject): () => void {
  const bin = buildServer();
  const pidDir = mkdtempSync(path.join(tmpdir(), "tidings-vitest-"));
  project.provide("tidingsBin", bin);
  project.provide("pidDir", pidDir);
  return () => killLeftovers(pidDir);
}
