// The temp dirs of the lab's tools (a cluster's CNI work dir, its agents' dirs) go with the tool:
// also when it is interrupted (Ctrl-C, even before its first namespace) and when a preparation
// fails halfway.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { projectFile } from "../../src/paths.js";
import { SIGINT_AT_TEMP_DIR } from "../support/cli-run.js";
import { canUseNetns } from "../support/netns.js";

/**
 * A one-host lab and its agents' dirs (no agent started), with the built modules argv[1] (cluster)
 * and argv[2] (agents). argv[3] "wait": prints "prepared" and waits to be stopped; "fail": the
 * preparation fails halfway (a net-conf that cannot be made), the lab is destroyed, and it prints
 * what its temp dir still holds.
 */
const LAB_SCRIPT = `
const [{ LabCluster }, { LabAgents }, { readdirSync }, { tmpdir }] = await Promise.all(
  [process.argv[1], process.argv[2], "node:fs", "node:os"].map((m) => import(m)));
const lab = await LabCluster.create({ tag: "tmpd", hosts: 1 });
if (process.argv[3] === "wait") {
  await LabAgents.prepare(lab, () => ({ Network: "198.19.0.0/16", Backend: { Type: "vxlan" } }));
  console.log("prepared");
  setInterval(() => {}, 1000);
} else {
  await LabAgents.prepare(lab, () => { throw new Error("no net-conf"); }).catch(() => undefined);
  await lab.destroy();
  console.log(JSON.stringify(readdirSync(tmpdir())));
}`;

const work = mkdtempSync(join(tmpdir(), "weft-temp-dirs-test-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function runLab(name: string, mode: "wait" | "fail", onOut?: (out: string, pid: number) => void) {
  const tmp = join(work, name);
  mkdirSync(tmp);
  const child = spawn(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      LAB_SCRIPT,
      projectFile("dist", "src", "lab", "cluster.js"),
      projectFile("dist", "src", "lab", "agents.js"),
      mode,
    ],
    { env: { ...process.env, TMPDIR: tmp }, stdio: ["ignore", "pipe", "inherit"] },
  );
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
    onOut?.(out, child.pid!);
  });
  return new Promise<{ code: number | null; out: string; tmp: string; pid: number }>((resolve) =>
    child.once("exit", (code) => resolve({ code, out, tmp, pid: child.pid! })),
  );
}

function namespacesOf(pid: number): string[] {
  return execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
    .split("\n")
    .filter((l) => l.includes(`-${pid}-`));
}

/** Runs a module script with argv[1..] (and Node.js flags `flags`) and returns its exit code and stdout. */
function runScript(script: string, args: string[], env: NodeJS.ProcessEnv = {}, flags: string[] = []) {
  const child = spawn(process.execPath, [...flags, "--input-type=module", "-e", script, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  return new Promise<{ code: number | null; out: string }>((resolve) =>
    child.once("exit", (code) => resolve({ code, out })),
  );
}

const TEMP_DIRS = projectFile("dist", "src", "lab", "temp-dirs.js");

describe("temp dirs without namespaces", () => {
  it("making one installs no signal handler (the namespaces' hook would make Ctrl-C exit and sweep namespaces)", async () => {
    const r = await runScript(
      `const { makeTempDir, removeTempDir } = await import(process.argv[1]);
      const dir = makeTempDir("weft-temp-dirs-alone-");
      console.log(JSON.stringify([process.listenerCount("SIGINT"), process.listenerCount("SIGTERM")]));
      removeTempDir(dir);`,
      [TEMP_DIRS],
    );
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual([0, 0]);
  });
});

describe.skipIf(!canUseNetns())("lab temp dirs", () => {
  it("a dir made before the first namespace is removed at exit only after what runs in the namespace is killed", async () => {
    const tmp = join(work, "order");
    mkdirSync(tmp);
    // The process in the namespace makes the dir again and again: removed before it is killed,
    // the dir would be back after the exit.
    const r = await runScript(
      `const [{ makeTempDir }, { Netns }, { spawn }] = await Promise.all(
        [process.argv[1], process.argv[2], "node:child_process"].map((m) => import(m)));
      const dir = makeTempDir("weft-order-");
      const ns = await Netns.create("tmpo");
      const [cmd, ...args] = ns.wrap(["timeout", "30", "sh", "-c", 'while :; do mkdir -p "$0"; done', dir]);
      spawn(cmd, args, { stdio: "ignore" });
      while ((await ns.pids()).length === 0) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 200));
      console.log(dir);
      process.exit(0);`,
      [TEMP_DIRS, projectFile("dist", "src", "lab", "netns.js")],
      { TMPDIR: tmp },
    );
    expect(r.code).toBe(0);
    expect(r.out.trim()).toMatch(/weft-order-/);
    expect(existsSync(r.out.trim())).toBe(false);
    expect(readdirSync(tmp)).toEqual([]);
  }, 60_000);

  it("Ctrl-C the moment the cluster's work dir is made, before its first namespace, removes the dir", async () => {
    const tmp = join(work, "early");
    mkdirSync(tmp);
    const r = await runScript(
      `const { LabCluster } = await import(process.argv[1]);
      await LabCluster.create({ tag: "tmpe", hosts: 1 });
      console.log("created");`,
      [projectFile("dist", "src", "lab", "cluster.js")],
      { TMPDIR: tmp },
      SIGINT_AT_TEMP_DIR,
    );
    expect(r.code).toBe(130);
    expect(r.out).toBe("");
    expect(readdirSync(tmp)).toEqual([]);
  }, 60_000);

  it("Ctrl-C after the agents' dirs are made removes them with the lab's work dir and namespaces", async () => {
    const r = await runLab("sigint", "wait", (out, pid) => {
      if (out.includes("prepared\n")) process.kill(pid, "SIGINT");
    });
    expect(r.out).toContain("prepared");
    expect(r.code).toBe(130);
    expect(readdirSync(r.tmp)).toEqual([]);
    expect(namespacesOf(r.pid)).toEqual([]);
  }, 60_000);

  it("a preparation that fails halfway leaves no dir of the agents", async () => {
    const r = await runLab("fail", "fail");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual([]);
    expect(readdirSync(r.tmp)).toEqual([]);
  }, 60_000);
});
