// The agent's log on a stdout that takes nothing, a real agent in a lab namespace writing to a FIFO
// the test fills and does not read: the agent still answers on weft.sock (before, its log was
// synchronous and the first line blocked the event loop for good) and, once the pipe is read, its
// stop's lines arrive; on a non-blocking pipe it stops and exits (before, sonic-boom retried EAGAIN
// without end, blocking the loop and, after minutes, overflowing the stack).
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { closeSync, constants, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { Socket } from "node:net";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { LabAgent } from "../../src/lab/agents.js";
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
      // As a parent that made the pipe non-blocking: libuv made the child's stdout blocking at its
      // spawn, and O_NONBLOCK belongs to the open pipe, which the two share (a pipe handle sets it).
      nonBlocking = new Socket({ fd: fifo.fd, readable: false, writable: true });
      const flags = /^flags:\s+(\d+)$/m.exec(readFileSync(`/proc/${a.process!.pid}/fdinfo/1`, "utf8"))![1];
      expect(Number.parseInt(flags, 8) & constants.O_NONBLOCK).toBe(constants.O_NONBLOCK);
      await env.agents.waitReady(a, 30_000);
      expect((await env.agents.status(a)).ready).toBe(true);
      a.process!.kill("SIGTERM");
      expect(await env.agents.exited(a, 30_000)).toBe(0);
    } finally {
      nonBlocking?.destroy();
      await restore(a, fifo.path);
    }
  }, 120_000);
});
