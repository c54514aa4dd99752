// The agent's log on a stdout that takes nothing, a real agent in a lab namespace writing to a FIFO
// the test fills and does not read: the agent still answers on weft.sock (before, its log was
// synchronous and the first line blocked the event loop for good) and, once the pipe is read, its
// stop's lines arrive; on a non-blocking pipe it stops and exits (before, sonic-boom retried EAGAIN
// without end, blocking the loop and, after minutes, overflowing the stack). A stdout whose reader
// is gone drops the lines and the agent runs on; an agent that fails to start on a non-blocking
// pipe nobody reads still exits (before, pino's own exit hook retried its lines for good).
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { LabAgent } from "../../src/lab/agents.js";
import { projectFile } from "../../src/paths.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, NETWORK } from "./support.js";

/** A FIFO in `dir`, open for reading and writing (a reader that never reads) and full. */
function fullFifo(dir: string): { path: string; fd: number } {
  const path = join(dir, "stdout.fifo");
  rmSync(path, { force: true });
  execFileSync("mkfifo", [path]);
  const fd = openSync(path, constants.O_RDWR);
  const w = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  try {
    // Writes of a page are all or nothing: EAGAIN means not a byte more fits.
    for (;;) writeSync(w, Buffer.alloc(4096, "\n"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
  } finally {
    closeSync(w);
  }
  return { path, fd };
}

/** All that `path` gives until its last writer closes it. */
function drain(path: string): { child: ChildProcess; text: Promise<string> } {
  const child = spawn("cat", [path], { stdio: ["ignore", "pipe", "inherit"] });
  let text = "";
  child.stdout!.on("data", (d) => (text += d));
  return { child, text: new Promise((r) => child.once("close", () => r(text))) };
}

/** Makes the pipe that `fd` is open on non-blocking for every process sharing it, as a parent's pipe handle does. */
function makeNonBlocking(fd: number, pid: number): Socket {
  // libuv made the child's stdout blocking at its spawn, and O_NONBLOCK belongs to the open pipe,
  // which the two share.
  const socket = new Socket({ fd, readable: false, writable: true });
  const flags = /^flags:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/fdinfo/1`, "utf8"))![1];
  expect(Number.parseInt(flags, 8) & constants.O_NONBLOCK).toBe(constants.O_NONBLOCK);
  return socket;
}

describe("agent: a start that fails, its log on a stdout nobody reads", () => {
  it("a non-blocking pipe never read: the agent exits 1, saying why on stderr", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-alog-"));
    const fifo = fullFifo(dir);
    let nonBlocking: Socket | undefined;
    try {
      // Three lines before the start fails (a net-conf.json that is not there): one in the write
      // that waits, the others buffered behind it for the exit to flush.
      const child = spawn(
        process.execPath,
        [
          projectFile("dist", "src", "cli", "main.js"),
          "agent",
          "--net-config",
          join(dir, "missing-net-conf.json"),
          "--key-file",
          join(dir, "missing-key"),
          "--state-dir",
          join(dir, "state"),
        ],
        {
          stdio: ["ignore", fifo.fd, "pipe"],
          env: { ...process.env, FLANNELD_KUBE_SUBNET_MGR: "true", FLANNELD_ETCD_ENDPOINTS: "x", FLANNELD_V: "1" },
        },
      );
      nonBlocking = makeNonBlocking(fifo.fd, child.pid!);
      let stderr = "";
      child.stderr!.on("data", (d) => (stderr += d));
      const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const code = await exited.finally(() => clearTimeout(timer));
      expect(code, `null: still running after 20 s, killed; stderr: ${stderr}`).toBe(1);
      expect(stderr).toContain("missing-net-conf.json");
    } finally {
      // The socket owns the fd once made.
      if (nonBlocking) nonBlocking.destroy();
      else closeSync(fifo.fd);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe.skipIf(!canUseNetns())("agent: its log on a stdout nobody reads", () => {
  const env = agentLab({
    tag: "alog",
    hosts: 1,
    conf: () => ({ Network: NETWORK, Backend: { Type: "vxlan" } }),
    settled: { what: "ready", check: (s) => s.ready },
  });

  /** Starts `a` again with its stdout on `fd`; its log file gets only stderr meanwhile. */
  const restartOn = async (a: LabAgent, fd: number) => {
    await env.agents.stop(a);
    a.stdout = fd;
    env.agents.start(a);
  };
  const restore = async (a: LabAgent, fifo: string) => {
    await env.agents.stop(a, "SIGKILL");
    a.stdout = undefined;
    rmSync(fifo, { force: true });
    env.agents.start(a);
    await env.agents.waitReady(a);
  };

  it("a blocking pipe: the agent answers while it is full, and its lines, the stop's too, come once it is read", async () => {
    const a = env.all[0];
    const fifo = fullFifo(a.dir);
    let reader: ReturnType<typeof drain> | undefined;
    try {
      await restartOn(a, fifo.fd);
      closeSync(fifo.fd);
      await env.agents.waitReady(a, 30_000);
      expect((await env.agents.status(a)).ready).toBe(true);
      reader = drain(fifo.path);
      a.process!.kill("SIGTERM");
      expect(await env.agents.exited(a, 30_000)).toBe(0);
      const text = await reader.text;
      for (const msg of ["starting", "lease held", "stopping", "stopped"]) expect(text).toContain(`"msg":"${msg}"`);
      // Each line names its node once: a key given twice is one that log readers may parse either way.
      for (const line of text.split("\n").filter((l) => l.startsWith("{"))) {
        expect(line.split('"node":').length - 1, line).toBe(1);
      }
    } finally {
      reader?.child.kill();
      await restore(a, fifo.path);
    }
  }, 120_000);

  it("a non-blocking pipe never read: the agent answers, and stops and exits 0 when told", async () => {
    const a = env.all[0];
    const fifo = fullFifo(a.dir);
    let nonBlocking: Socket | undefined;
    try {
      await restartOn(a, fifo.fd);
      const since = await env.agents.logSize(a);
      nonBlocking = makeNonBlocking(fifo.fd, a.process!.pid!);
      await env.agents.waitReady(a, 30_000);
      expect((await env.agents.status(a)).ready).toBe(true);
      a.process!.kill("SIGTERM");
      expect(await env.agents.exited(a, 30_000)).toBe(0);
      // Its lines given up quietly: before, pino's own exit hook threw EAGAIN there, a stack trace.
      const stderr = readFileSync(join(a.dir, "agent.log")).subarray(since).toString("utf8");
      expect(stderr).not.toMatch(/EAGAIN|\n\s+at /);
    } finally {
      nonBlocking?.destroy();
      await restore(a, fifo.path);
    }
  }, 120_000);

  it("a pipe whose reader is gone: the lines are dropped, and the agent runs and stops, exiting 0", async () => {
    const a = env.all[0];
    const path = join(a.dir, "stdout.fifo");
    rmSync(path, { force: true });
    execFileSync("mkfifo", [path]);
    const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = openSync(path, constants.O_WRONLY);
    let open = [reader, writer];
    try {
      await restartOn(a, writer);
      // No reader left: every write to the agent's stdout fails with EPIPE.
      for (const fd of open) closeSync(fd);
      open = [];
      await env.agents.waitReady(a, 30_000);
      expect((await env.agents.status(a)).ready).toBe(true);
      a.process!.kill("SIGTERM");
      expect(await env.agents.exited(a, 30_000)).toBe(0);
    } finally {
      for (const fd of open) closeSync(fd);
      await restore(a, path);
    }
  }, 120_000);
});
