// The lab's namespaces take what runs inside them along when they go: a process whose stop never
// came (an agent left by a test worker that exited mid-hook) must not keep a namespace, its
// devices and its CPU use alive after the namespace's name is gone.
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Netns, sweepOrphans } from "../../src/lab/netns.js";
import { projectFile } from "../../src/paths.js";
import { pids, procFile } from "../support/cli-run.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("lab namespaces", () => {
  it("destroy() kills the processes still running inside", async () => {
    const ns = await Netns.create("nsk");
    try {
      const [cmd, ...argv] = ns.wrap(["sleep", "60"]);
      const child = spawn(cmd, argv, { stdio: "ignore" });
      const exited = new Promise<NodeJS.Signals | null>((r) => child.once("exit", (_code, signal) => r(signal)));
      // Wait until the process is inside (ip netns exec has switched and exec'd sleep).
      for (let t = 0; t < 50 && !(await ns.pids()).includes(child.pid!); t++)
        await new Promise((r) => setTimeout(r, 20));
      expect(await ns.pids()).toContain(child.pid);
      await ns.destroy();
      expect(await exited).toBe("SIGKILL");
    } finally {
      await ns.destroy(); // a second call after the test's own does nothing
    }
  });
});

describe.skipIf(!canUseNetns())("lab namespaces of a maker that died without cleaning up", () => {
  it("are swept, with what runs inside; those of a live maker stay", async () => {
    // A pid that has just exited stands for a tool killed by SIGKILL or a native crash.
    const gone = spawn("true");
    await new Promise((r) => gone.once("exit", r));
    const orphan = `weft-orphan-${gone.pid}-1`;
    const kept = `weft-orphan-${process.pid}-${Date.now()}`;
    try {
      execFileSync("ip", ["netns", "add", orphan]);
      execFileSync("ip", ["netns", "add", kept]);
      const sleeper = spawn("ip", ["netns", "exec", orphan, "sleep", "60"], { stdio: "ignore" });
      const killed = new Promise<NodeJS.Signals | null>((r) => sleeper.once("exit", (_c, signal) => r(signal)));
      for (let t = 0; t < 50 && !netnsPids(orphan).includes(sleeper.pid!); t++)
        await new Promise((r) => setTimeout(r, 20));
      expect(netnsPids(orphan)).toContain(sleeper.pid);
      expect(sweepOrphans()).toContain(orphan);
      expect(await killed).toBe("SIGKILL");
      const names = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
      expect(names).not.toContain(orphan);
      expect(names).toContain(kept);
    } finally {
      for (const name of [orphan, kept]) execFileSync("sh", ["-c", `ip netns del ${name} 2>/dev/null || true`]);
    }
  });
});

function netnsPids(name: string): number[] {
  return execFileSync("ip", ["netns", "pids", name], { encoding: "utf8" }).split(/\s+/).filter(Boolean).map(Number);
}

/**
 * A process that exits at the worst moment of a creation or a removal (argv[2]: "create" exits
 * right after calling Netns.create, "destroy" right after calling destroy()), with the built
 * module argv[1]; prints nothing, its pid names its namespaces.
 */
const EXIT_MIDWAY = `import(process.argv[1]).then(async ({ Netns }) => {
  if (process.argv[2] === "create") { void Netns.create("midway"); process.exit(0); }
  const ns = await Netns.create("midway"); void ns.destroy(); process.exit(0);
});`;

describe.skipIf(!canUseNetns())("lab namespaces of a process that exits midway", () => {
  for (const moment of ["create", "destroy"]) {
    it(`are removed by the exit hook when it exits during ${moment === "create" ? "Netns.create" : "destroy()"}`, async () => {
      const child = spawn(
        process.execPath,
        ["-e", EXIT_MIDWAY, projectFile("dist", "src", "lab", "netns.js"), moment],
        {
          stdio: ["ignore", "ignore", "inherit"],
        },
      );
      const code = await new Promise((r) => child.once("exit", r));
      expect(code).toBe(0);
      const mine = `weft-midway-${child.pid}-`;
      // An `ip` the child started and left running may still be adding or removing: wait for it,
      // so that what it does counts.
      for (let t = 0; t < 250 && ipRunsOn(mine); t++) await new Promise((r) => setTimeout(r, 20));
      const left = execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
        .split("\n")
        .filter((l) => l.startsWith(mine));
      for (const l of left) execFileSync("ip", ["netns", "del", l.split(" ")[0]]);
      expect(left).toEqual([]);
    });
  }
});

/** Whether an `ip` process names a namespace starting with `prefix`. */
function ipRunsOn(prefix: string): boolean {
  return pids().some((pid) => {
    const argv = procFile(pid, "cmdline")?.split("\0") ?? [];
    return argv[0] === "ip" && argv.some((a) => a.startsWith(prefix));
  });
}

/** Runs a module script with argv[1] the built netns module, in a process group of its own. */
function runWithNetns(script: string, env: NodeJS.ProcessEnv = {}) {
  const child = spawn(
    process.execPath,
    ["--input-type=module", "-e", script, projectFile("dist", "src", "lab", "netns.js")],
    { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"], detached: true },
  );
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  return new Promise<{ code: number | null; lines: string[]; pid: number }>((resolve) =>
    child.once("exit", (code) => resolve({ code, lines: out.trim().split("\n"), pid: child.pid! })),
  );
}

describe.skipIf(!canUseNetns())("lab namespaces whose creation fails", () => {
  it("a Ctrl-C that kills `ip netns add` reaches the tool's SIGINT handler before the failure does", async () => {
    // An `ip` that, on `netns add`, sends SIGINT to its process group, as a terminal's Ctrl-C.
    const dir = mkdtempSync(join(tmpdir(), "weft-netns-intr-"));
    try {
      const realIp = execFileSync("sh", ["-c", "command -v ip"], { encoding: "utf8" }).trim();
      writeFileSync(
        join(dir, "ip"),
        `#!/bin/sh\nif [ "$1 $2" = "netns add" ]; then kill -INT 0; fi\nexec ${realIp} "$@"\n`,
      );
      chmodSync(join(dir, "ip"), 0o755);
      // Called from an I/O callback (as a tool's steps are), where one turn of the loop is too few.
      const r = await runWithNetns(
        `const { Netns } = await import(process.argv[1]);
        process.on("SIGINT", () => console.log("handled"));
        await (await import("node:fs/promises")).readFile("/proc/self/stat");
        await Netns.create("intr").then(() => console.log("created"), (e) => console.log("rejected " + e.signal));`,
        { PATH: `${dir}:${process.env.PATH}` },
      );
      expect(r.lines).toEqual(["handled", "rejected SIGINT"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a name that exists already (another run's, in a shared /run/netns) stays", async () => {
    const r = await runWithNetns(
      `const { Netns } = await import(process.argv[1]);
      const { execFileSync } = await import("node:child_process");
      execFileSync("ip", ["netns", "add", \`weft-exist-\${process.pid}-1\`]);
      await Netns.create("exist").catch((e) => console.log(e.stderr.toString().trim()));`,
    );
    const name = `weft-exist-${r.pid}-1`;
    try {
      expect(r.lines[0]).toContain("File exists");
      expect(execFileSync("ip", ["netns", "list"], { encoding: "utf8" })).toContain(name);
    } finally {
      execFileSync("sh", ["-c", `ip netns del ${name} 2>/dev/null || true`]);
    }
  });
});
