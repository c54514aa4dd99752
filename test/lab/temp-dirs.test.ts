// The temp dirs of the lab's tools (a cluster's CNI work dir, its agents' dirs) go with the tool:
// also when it is interrupted (Ctrl-C) and when a preparation fails halfway.
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { projectFile } from "../../src/paths.js";
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

describe.skipIf(!canUseNetns())("lab temp dirs", () => {
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
