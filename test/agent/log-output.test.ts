// The agent's log on a stdout that takes nothing, a real agent in a lab namespace writing to a FIFO
// the test fills and does not read: the agent still answers on weft.sock (before, its log was
// synchronous and the first line blocked the event loop for good) and, once the pipe is read, its
// stop's lines arrive; on a non-blocking pipe it stops and exits (before, sonic-boom retried EAGAIN
// without end, blocking the loop and, after minutes, overflowing the stack). A stdout whose reader
// is gone drops the lines, counted on /metrics, and the agent runs on (a new reader is told how
// many); an agent that fails to start on a non-blocking pipe nobody reads still exits (before,
// pino's own exit hook retried its lines for good).
// The log module alone, in a child process on a FIFO: a stop that begins with lines queued for a
// reader gone returns (before, sonic-boom's flushSync retried EPIPE without end); lines dropped
// for a full buffer are counted and said once the pipe is read, a notice dropped itself counted in
// the next (before, that said 1); a stop while the pool's write is under way writes every line whole
// and no empty line (before, a line of its partial write lost its rest and a newline was written
// even when no line was torn), and on a blocking pipe the stop's lines are not written inside a
// longer line the pool's write has under way (before, they split it); the newline ending a torn
// line counts no line when the reader is gone (before, it counted one); a notice written in part
// before an EPIPE is not said again (before, the next repeated its count), one lost whole is (before,
// its count was lost); lines kept hold about their own size (before, a Buffer per line held its
// 8 KiB slab). The last writes, the exit hook's and before a second Ctrl-C's kill, write the lines
// left for a pool write's callback that cannot come (before, they were lost: a failed start's line
// after a long one, on a pipe or a file; a stop's lines behind a long line on a full blocking
// pipe; those of a kill while the pool hangs) and count lines left queued (before, uncounted).
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  closeSync,
  constants,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  writeSync,
} from "node:fs";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { LabAgent } from "../../src/lab/agents.js";
import { projectFile } from "../../src/paths.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, NETWORK } from "./support.js";
import { agentRequest } from "../../src/cli/agent-client.js";
import { until } from "../io/until.js";

/** A FIFO in `dir`, open for reading and writing (a reader that never reads) and full of `byte`. */
function fullFifo(dir: string, byte = "\n"): { path: string; fd: number } {
  const path = join(dir, "stdout.fifo");
  rmSync(path, { force: true });
  execFileSync("mkfifo", [path]);
  const fd = openSync(path, constants.O_RDWR);
  fill(path, byte);
  return { path, fd };
}

/** Fills the pipe that `path` names with `byte`, through a writer of its own that it closes. */
function fill(path: string, byte = "\n"): void {
  const w = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  try {
    // Writes of a page are all or nothing: EAGAIN means not a byte more fits.
    for (;;) writeSync(w, Buffer.alloc(4096, byte));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
  } finally {
    closeSync(w);
  }
}

/** All that `from` (a path, or an open fd) gives until its last writer closes it. */
function drain(from: string | number): { child: ChildProcess; text: Promise<string>; soFar: () => string } {
  const child =
    typeof from === "number"
      ? spawn("cat", [], { stdio: [from, "pipe", "inherit"] })
      : spawn("cat", [from], { stdio: ["ignore", "pipe", "inherit"] });
  let text = "";
  child.stdout!.on("data", (d) => (text += d));
  return { child, text: new Promise((r) => child.once("close", () => r(text))), soFar: () => text };
}

/**
 * A reader of the FIFO `path` in this process, never blocking: `read` adds what the pipe has to
 * `text`, or with `once` what one read gets (a writer may refill the pipe as fast as it is read).
 */
function ownReader(path: string): { read: (once?: boolean) => string; close: () => void } {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const b = Buffer.alloc(64 * 1024);
  let text = "";
  return {
    read: (once = false) => {
      for (;;) {
        try {
          const n = readSync(fd, b);
          if (n === 0) return text;
          text += b.toString("utf8", 0, n);
          if (once) return text;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "EAGAIN") return text;
          throw err;
        }
      }
    },
    close: () => closeSync(fd),
  };
}

/**
 * A node process running `body` with `out`, an AgentLogStream (dist's) on its stdout `fd`, whose
 * drop notice is a line {"notice":n} (with `pad`, that many x's in it, an expression in n) written through `out`; the
 * test talks to it on stdin/stderr.
 */
function logChild(
  fd: number,
  body: string,
  opts: { pad?: number | string; nodeArgs?: string[]; env?: NodeJS.ProcessEnv } = {},
): { child: ChildProcess; stderr: () => string } {
  const notice = opts.pad !== undefined ? `{ notice: n, pad: "x".repeat(${opts.pad}) }` : "{ notice: n }";
  const script = `
    import { existsSync, mkdir, readSync, writeSync } from "node:fs";
    const { AgentLogStream } = await import(${JSON.stringify(projectFile("dist", "src", "cli", "agent-log.js"))});
    const out = new AgentLogStream(1, (n) => out.write(JSON.stringify(${notice}) + "\\n"));
    ${body}`;
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), "--input-type=module", "-e", script], {
    stdio: ["pipe", fd, "pipe"],
    env: { ...process.env, ...opts.env },
  });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  return { child, stderr: () => stderr };
}

/** Threads of process `pid` waiting in a write to a pipe for room (pipe_wait up to Linux 5.4). */
const inPipeWrite = (pid: number) =>
  readdirSync(`/proc/${pid}/task`).filter((t) =>
    /pipe_(write|wait)$/.test(readFileSync(`/proc/${pid}/task/${t}/wchan`, "utf8")),
  ).length;

/** The last count a child said as "in all n" (-1 before the first). */
const lastInAll = (stderr: string) => Number([...stderr.matchAll(/in all (\d+)\n/g)].at(-1)?.[1] ?? -1);

/** Makes the pipe that `fd` is open on non-blocking for every process sharing it, as a parent's pipe handle does. */
function makeNonBlocking(fd: number, pid: number): Socket {
  // libuv made the child's stdout blocking at its spawn, and O_NONBLOCK belongs to the open pipe,
  // which the two share.
  const socket = new Socket({ fd, readable: false, writable: true });
  const flags = /^flags:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/fdinfo/1`, "utf8"))![1];
  expect(Number.parseInt(flags, 8) & constants.O_NONBLOCK).toBe(constants.O_NONBLOCK);
  return socket;
}

/** A line {"big":"A…"} of `size` bytes with its newline. */
const big = (size: number) => `${JSON.stringify({ big: "A".repeat(size - 11) })}\n`;
/** A child's statement logging big(size) through `out`. */
const logBig = (size: number) => `out.write(JSON.stringify({ big: "A".repeat(${size - 11}) }) + "\\n");`;

/**
 * A child on a full blocking FIFO (of dots) whose pool's write of big(200_000) waits for room: with
 * main.ts's exit hook, once that write waits, it runs `stop` (toSync first); once `stopped` holds, a
 * reader reads the FIFO. Its text, once the child has exited, and the exit code.
 */
async function stalledLongLine(
  stop: string,
  stopped: (stderr: string, pid: number) => boolean,
): Promise<{ text: string; stderr: string; code: number | null }> {
  const dir = mkdtempSync(join(tmpdir(), "weft-alog-"));
  const fifo = fullFifo(dir, ".");
  const { child, stderr } = logChild(
    fifo.fd,
    `process.once("exit", () => out.atExit());
    ${logBig(200_000)}
    writeSync(2, "queued\\n");
    readSync(0, Buffer.alloc(1));
    out.toSync();
    ${stop}`,
  );
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  let fd: number | undefined = fifo.fd;
  let reader: ReturnType<typeof drain> | undefined;
  try {
    await until(
      "the pool's write waiting for room",
      () => (stderr().includes("queued") && inPipeWrite(child.pid!) === 1 ? true : undefined),
      20_000,
    );
    child.stdin!.write("g");
    await until("the stop's lines", () => (stopped(stderr(), child.pid!) ? true : undefined), 20_000);
    reader = drain(fifo.path);
    const code = await exited;
    // The last writer gone, the reader's text ends.
    closeSync(fd);
    fd = undefined;
    return { text: await reader.text, stderr: stderr(), code };
  } finally {
    child.kill("SIGKILL");
    reader?.child.kill();
    if (fd !== undefined) closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
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

describe("agent log: the module on a FIFO", () => {
  it("a stop that begins with lines queued for a reader gone returns, dropping them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-alog-"));
    const path = join(dir, "stdout.fifo");
    execFileSync("mkfifo", [path]);
    let reader: number | undefined = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = openSync(path, constants.O_WRONLY);
    fill(path);
    // The first line's write waits in the pool on the full pipe, the others are queued behind it;
    // the main thread then waits on stdin, so that no write's callback runs before the stop.
    const { child, stderr } = logChild(
      writer,
      `for (let i = 0; i < 100; i++) out.write(JSON.stringify({ msg: "line", i }) + "\\n");
      writeSync(2, "queued\\n");
      readSync(0, Buffer.alloc(1));
      out.toSync();
      writeSync(2, "stopped, dropped " + out.dropped + "\\n");
      process.exit(0);`,
    );
    closeSync(writer);
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    try {
      await until("the lines queued", () => (stderr().includes("queued") ? true : undefined), 20_000);
      closeSync(reader);
      reader = undefined;
      child.stdin!.end("g");
      const code = await exited;
      expect(code, `null: toSync still running after 20 s, killed; stderr: ${stderr()}`).toBe(0);
      // The 99 queued lines: the pool's write of the first is left to it, and its callback never ran.
      expect(stderr()).toContain("stopped, dropped 99\n");
    } finally {
      clearTimeout(timer);
      child.kill("SIGKILL");
      if (reader !== undefined) closeSync(reader);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("lines past the buffer of a pipe nobody reads are counted, and said once it is read, with the notice's own drops", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-alog-"));
    const fifo = fullFifo(dir);
    const total = 30_000;
    // About 3 MiB of lines: the first waits in the pool, 1 MiB is kept, the rest dropped. The notice
    // is larger than a write: the first writes once the pipe is read leave it no room, so it is
    // dropped itself until they do (before, the next notice then said 1).
    const { child, stderr } = logChild(
      fifo.fd,
      `for (let i = 0; i < ${total}; i++) out.write(JSON.stringify({ msg: "line", i, pad: "x".repeat(64) }) + "\\n");
      writeSync(2, "dropped " + out.dropped + "\\n");
      process.stdin.once("data", () => writeSync(2, "in all " + out.dropped + "\\n"));`,
      { pad: 64 * 1024 },
    );
    let reader: ReturnType<typeof drain> | undefined;
    try {
      const dropped = await until(
        "the child's count",
        () => /dropped (\d+)/.exec(stderr())?.[1] ?? (child.exitCode !== null ? "exited" : undefined),
        20_000,
      );
      expect(Number(dropped), stderr()).toBeGreaterThan(0);
      reader = drain(fifo.path);
      // The whole line: a read can end within it.
      const text = await until(
        "the drop notice",
        () => (/\{"notice":\d+,"pad":"x+"\}\n/.test(reader!.soFar()) ? reader!.soFar() : undefined),
        20_000,
      );
      child.stdin!.write("?");
      const inAll = Number(await until("the count in all", () => /in all (\d+)/.exec(stderr())?.[1], 20_000));
      const lines = text.split("\n").filter((l) => l.startsWith("{"));
      // Said once, after every line kept, with all the counter has: the lines and its own drops.
      expect(inAll).toBeGreaterThan(Number(dropped));
      expect(JSON.parse(lines.at(-1)!).notice).toBe(inAll);
      expect(lines.length - 1 + Number(dropped)).toBe(total);
    } finally {
      child.kill("SIGKILL");
      reader?.child.kill();
      closeSync(fifo.fd);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  /**
   * The child for a stop while the pool's write of a line `{"big":"A…"}` (`size` bytes with its
   * newline) is under way on a non-blocking pipe with a page of room. One pool thread does its
   * work in order: once the sentinel is made, the write is done and its callback waits for the
   * event loop, which the main thread holds until the stop's line is written or queued (and, with
   * `hold`, until stdin gives another byte). The line "stopped" is logged after them.
   */
  const tornChild = (fd: number, dir: string, size: number, o: { hold?: boolean } = {}) => {
    const sentinel = JSON.stringify(join(dir, "written"));
    const child = logChild(
      fd,
      `readSync(0, Buffer.alloc(1));
      ${logBig(size)}
      mkdir(${sentinel}, () => {
        out.write(JSON.stringify({ msg: "stopped" }) + "\\n");
        writeSync(2, "dropped " + out.dropped + "\\n");
      });
      while (!existsSync(${sentinel})) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
      writeSync(2, "written\\n");
      readSync(0, Buffer.alloc(1));
      out.toSync();
      out.write(JSON.stringify({ msg: "stopping" }) + "\\n");
      writeSync(2, "stopping\\n");
      ${o.hold ? "readSync(0, Buffer.alloc(1));" : ""}`,
      { env: { UV_THREADPOOL_SIZE: "1" } },
    );
    return { ...child, exited: new Promise((r) => child.child.once("exit", r)) };
  };
  /**
   * A full FIFO with `room` bytes of it read, a (blocking) writer for a child, and the FIFO's one
   * reader this test's `reader`, so that closing it leaves the pipe none.
   */
  const alone = (dir: string, room = 0) => {
    const fifo = fullFifo(dir, ".");
    if (room > 0) readSync(fifo.fd, Buffer.alloc(room));
    const writer = openSync(fifo.path, constants.O_WRONLY);
    const reader = ownReader(fifo.path);
    closeSync(fifo.fd);
    return { writer, reader };
  };
  /** tornChild (a `size`-byte line) on `alone`'s writer, made non-blocking, with a page of room. */
  const tornAlone = (dir: string, size: number, o: Parameters<typeof tornChild>[3]) => {
    const { writer, reader } = alone(dir, 4096);
    const torn = tornChild(writer, dir, size, o);
    // The socket owns the fd: destroyed, it closes this process's writer.
    makeNonBlocking(writer, torn.child.pid!).destroy();
    return { ...torn, reader };
  };
  /**
   * A child on `alone`'s writer (a blocking pipe) that logs 3 MiB of lines (1 MiB kept, the rest
   * dropped: "dropped n" on stderr), says its count every 50 ms ("in all n"), and logs
   * {"msg":"again"} for each byte on stdin.
   */
  const crowdedAlone = (dir: string, pad?: string) => {
    const { writer, reader } = alone(dir);
    const child = logChild(
      writer,
      `for (let i = 0; i < 30_000; i++) out.write(JSON.stringify({ msg: "line", i, pad: "x".repeat(64) }) + "\\n");
      writeSync(2, "dropped " + out.dropped + "\\n");
      setInterval(() => writeSync(2, "in all " + out.dropped + "\\n"), 50);
      process.stdin.on("data", () => out.write(JSON.stringify({ msg: "again" }) + "\\n"));`,
      { pad },
    );
    closeSync(writer);
    return { ...child, reader };
  };
  const waitFor = (what: string, text: () => string) =>
    until(what, () => (text().includes(what) ? true : undefined), 20_000);

  // 100 bytes: the page takes the line whole, and the stop's line is written beside it; 6011: the
  // page takes part of it; 4097: all of it but its newline.
  it.each([100, 4097, 6011])(
    "a stop while the pool's write of a %i-byte line is under way on a non-blocking pipe: every line whole, none dropped, no empty line",
    async (size) => {
      const dir = mkdtempSync(join(tmpdir(), "weft-alog-"));
      // Not newlines: an empty line in what is read is the writer's.
      const fifo = fullFifo(dir, ".");
      // Room for a page: the pool's write of the line writes a page of it and returns.
      readSync(fifo.fd, Buffer.alloc(4096));
      const { child, stderr, exited } = tornChild(fifo.fd, dir, size);
      let nonBlocking: Socket | undefined;
      let reader: ReturnType<typeof drain> | undefined;
      try {
        nonBlocking = makeNonBlocking(fifo.fd, child.pid!);
        child.stdin!.write("g");
        await waitFor("written", stderr);
        // Read from now on: a write waits in EAGAIN retries until there is room, 2 s at most, so
        // it goes on once cat reads.
        reader = drain(fifo.path);
        await until("cat reading", () => (reader!.soFar() !== "" ? true : undefined), 20_000);
        child.stdin!.write("g");
        const dropped = await until("the child's count", () => /dropped (\d+)/.exec(stderr())?.[1], 20_000);
        child.stdin!.end();
        await exited;
        // The last writer gone, the reader's text ends.
        nonBlocking.destroy();
        const text = await reader.text;
        expect(text, text.slice(0, 40)).toMatch(/^\./);
        // A partial write's rest is written before the stop's line, which waited for its callback
        // (before, that rest was dropped, and a newline made an empty line even after a whole line).
        expect(text.replace(/^\.+/, ""), stderr()).toBe(`${big(size)}{"msg":"stopping"}\n{"msg":"stopped"}\n`);
        expect(Number(dropped)).toBe(0);
      } finally {
        child.kill("SIGKILL");
        reader?.child.kill();
        // The socket owns the fd once made (destroying it again does nothing).
        if (nonBlocking) nonBlocking.destroy();
        else closeSync(fifo.fd);
        rmSync(dir, { recursive: true, force: true });
      }
    },
    60_000,
  );

  it("a stop while the pool's write of a line longer than a blocking pipe waits for room: no line is split by another's bytes", async () => {
    const { text, stderr } = await stalledLongLine(
      `for (let i = 0; i < 3; i++) out.write(JSON.stringify({ msg: "stopping", i }) + "\\n");
      writeSync(2, "stopping\\n");`,
      // The stop's lines queued (or, before, their write waiting for room beside the pool's).
      (stderr, pid) => stderr.includes("stopping") || inPipeWrite(pid) === 2,
    );
    // Before, the pipe took a part of the long line, then the stop's lines, then the rest of it.
    const stopping = [0, 1, 2].map((i) => `{"msg":"stopping","i":${i}}\n`).join("");
    expect(text.replace(/^\.+/, ""), stderr).toBe(`${big(200_000)}${stopping}`);
  }, 60_000);

  // 6011: the page takes part of the line; 4097: all of it but its newline, the rest alone.
  it.each([
    [6011, 3],
    [4097, 2],
  ])(
    "a stop's %i-byte torn line whose reader is gone before the pool's callback: the newline ending it counts no line",
    async (size, lost) => {
      const dir = mkdtempSync(join(tmpdir(), "weft-alog-"));
      let torn: ReturnType<typeof tornAlone> | undefined;
      let reader: ReturnType<typeof ownReader> | undefined;
      try {
        torn = tornAlone(dir, size, { hold: true });
        const { child, stderr, exited } = torn;
        reader = torn.reader;
        child.stdin!.write("g");
        await waitFor("written", stderr);
        reader.read();
        child.stdin!.write("g");
        await waitFor("stopping", stderr);
        // The stop's line waits for the callback of the pool's write, which ended within a line.
        expect(reader.read().replace(/^\.+/, "")).toBe(big(size).slice(0, 4096));
        // Gone before the pool's callback: the line's rest, "stopping", the newline ending the
        // line's piece and "stopped" get EPIPE.
        reader.close();
        reader = undefined;
        child.stdin!.end("g");
        // The torn line's rest (unless only its newline: its content is out), "stopping", "stopped"
        // (the newline counts none; before, a rest of only a newline counted one).
        expect(await until("the child's count", () => /dropped (\d+)/.exec(stderr())?.[1], 20_000)).toBe(String(lost));
        await exited;
      } finally {
        torn?.child.kill("SIGKILL");
        reader?.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
    60_000,
  );

  /**
   * Runs `test` on crowdedAlone's child once it has dropped lines (`dropped`), with `leave`, which
   * closes the FIFO's reader, and `reopen`, which gives it a new one, has the child log
   * {"msg":"again"} and returns what that reader got once it holds `last`.
   */
  const withCrowded = async (
    pad: string | undefined,
    test: (c: {
      stderr: () => string;
      reader: ReturnType<typeof ownReader>;
      dropped: number;
      leave: () => void;
      reopen: (last: RegExp) => Promise<string>;
    }) => Promise<void>,
  ) => {
    const dir = mkdtempSync(join(tmpdir(), "weft-alog-"));
    const { child, stderr, reader } = crowdedAlone(dir, pad);
    const readers = [reader];
    try {
      const dropped = Number(await until("the child's count", () => /dropped (\d+)/.exec(stderr())?.[1], 20_000));
      expect(dropped).toBeGreaterThan(1000);
      const leave = () => readers.shift()!.close();
      const reopen = (last: RegExp) => {
        const again = ownReader(join(dir, "stdout.fifo"));
        readers.push(again);
        child.stdin!.write("g");
        return until("the next notice", () => (last.test(again.read()) ? again.read() : undefined), 20_000);
      };
      await test({ stderr, reader, dropped, leave, reopen });
    } finally {
      child.kill("SIGKILL");
      for (const r of readers) r.close();
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it(
    "a notice written in part before its reader went is not said again by the next",
    () =>
      // The first notice (of thousands of lines) is larger than the pipe: its write waits for room
      // while this test reads its start and leaves, and its rest gets EPIPE.
      withCrowded("n > 1000 ? 200_000 : 0", async ({ stderr, reader, dropped, leave, reopen }) => {
        // Its count: those lines, and itself each time the buffer had no room for it yet.
        const said = Number(
          await until("the notice", () => /\{"notice":(\d+),"pad":"x/.exec(reader.read(true))?.[1], 20_000),
        );
        expect(said).toBeGreaterThanOrEqual(dropped);
        leave();
        // The notice's rest.
        await until("the rest dropped", () => (lastInAll(stderr()) > said ? true : undefined), 20_000);
        expect(lastInAll(stderr())).toBe(said + 1);
        const text = await reopen(/"pad":""\}\n/);
        // What the pipe still had of the notice, ended by a newline; the lines since the count was
        // said: the notice's rest (before, its count again).
        expect(text).toMatch(/^x*\n\{"msg":"again"\}\n\{"notice":1,"pad":""\}\n$/);
      }),
    60_000,
  );

  it(
    "a notice lost whole to its reader gone leaves its count to the next",
    () =>
      withCrowded(undefined, async ({ stderr, reader, dropped, leave, reopen }) => {
        // A write after the drops went through: the notice is queued, behind about 1 MiB of lines
        // that the pipe cannot take before this reader leaves.
        await until("the first line", () => (reader.read(true).includes('"i":0,') ? true : undefined), 20_000);
        leave();
        // EPIPE drops what is queued, the notice with it.
        await until("the lines dropped", () => (lastInAll(stderr()) > dropped ? true : undefined), 20_000);
        const text = await reopen(/\{"notice":\d+\}\n/);
        // Whole lines the pipe still had, then the next notice, saying every line dropped, as no
        // notice was read before (before, it left out the count of the one lost).
        const lines = text.split("\n");
        expect(lines.pop()).toBe("");
        for (const l of lines) expect(() => JSON.parse(l), l).not.toThrow();
        expect(lines.slice(-2)).toEqual(['{"msg":"again"}', `{"notice":${lastInAll(stderr())}}`]);
      }),
    60_000,
  );

  it("lines kept for a pipe nobody reads hold about their own size, not the buffers allocated beside them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-alog-"));
    const fifo = fullFifo(dir);
    // 1 MiB of small lines (the rest dropped), each made between other small buffers, as the
    // agent's packets: a line kept as a Buffer kept the 8 KiB slab it shares with them alive.
    const { child, stderr } = logChild(
      fifo.fd,
      `const used = () => { globalThis.gc(); const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers; };
      const before = used();
      const others = [];
      for (let i = 0; i < 10_000; i++) {
        out.write(JSON.stringify({ msg: "line", i, pad: "x".repeat(120) }) + "\\n");
        others.push(Buffer.from("y".repeat(3000)));
        if (others.length > 8) others.shift();
      }
      others.length = 0;
      writeSync(2, "grown " + (used() - before) + " dropped " + out.dropped + "\\n");
      process.exit(0);`,
      { nodeArgs: ["--expose-gc"] },
    );
    try {
      const [grown, dropped] = await until(
        "the child's measure",
        () => /grown (-?\d+) dropped (\d+)/.exec(stderr())?.slice(1).map(Number),
        20_000,
      );
      expect(dropped, stderr()).toBeGreaterThan(0);
      expect(grown / 2 ** 20, stderr()).toBeLessThan(4);
    } finally {
      child.kill("SIGKILL");
      closeSync(fifo.fd);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("agent log: the last writes, when no write's callback can follow", () => {
  /** A FIFO in a new directory, open for reading and writing (a writer that keeps it open), read by cat. */
  const readFifo = () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-alog-"));
    const path = join(dir, "stdout.fifo");
    execFileSync("mkfifo", [path]);
    const fd = openSync(path, constants.O_RDWR);
    return { dir, fd, reader: drain(path) };
  };
  /**
   * The child of a start that fails: a 5000-byte line (through the pool, not whole lines within
   * PIPE_BUF), a short one, and process.exit(1) in the same tick, with main.ts's exit hook.
   */
  const failedStart = (fd: number) => {
    const c = logChild(
      fd,
      `process.once("exit", () => out.atExit());
      ${logBig(5000)}
      out.write(JSON.stringify({ msg: "failed" }) + "\\n");
      process.exit(1);`,
    );
    return { ...c, exited: new Promise<number | null>((r) => c.child.once("exit", (code) => r(code))) };
  };

  it("a failed start's exit in the tick that gave a long line to the pool, on a pipe: the line after it is written", async () => {
    const { dir, fd, reader } = readFifo();
    let open: number | undefined = fd;
    try {
      const { exited, stderr } = failedStart(fd);
      expect(await exited, stderr()).toBe(1);
      closeSync(fd);
      open = undefined;
      const text = await reader.text;
      // Either order: process.exit waits for the pool's write, which may begin after the exit
      // hook's; a newline begins the hook's, as the pool's may be under way (before, the short line
      // waited for its callback, which never ran).
      expect(
        text
          .split("\n")
          .filter((l) => l !== "")
          .sort(),
        text.slice(0, 80),
      ).toEqual([big(5000).trimEnd(), '{"msg":"failed"}']);
    } finally {
      reader.child.kill();
      if (open !== undefined) closeSync(open);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it.each([
    ["", 0],
    ["with O_APPEND", constants.O_APPEND],
  ])(
    "a failed start's exit in the tick that gave a long line to the pool, on a regular file %s: both lines, whole",
    async (_, append) => {
      const dir = mkdtempSync(join(tmpdir(), "weft-alog-"));
      const path = join(dir, "stdout.log");
      const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | append);
      try {
        const { exited, stderr } = failedStart(fd);
        expect(await exited, stderr()).toBe(1);
        // A file takes each write whole (its offset's lock, or O_APPEND's): no newline is needed.
        const lines = readFileSync(path, "utf8").split("\n");
        expect(lines.pop()).toBe("");
        expect(lines.sort()).toEqual([big(5000).trimEnd(), '{"msg":"failed"}']);
      } finally {
        closeSync(fd);
        rmSync(dir, { recursive: true, force: true });
      }
    },
    60_000,
  );

  it("a stop's exit while the pool's write of a line longer than a blocking pipe waits for room: the stop's lines are written", async () => {
    const { text, stderr, code } = await stalledLongLine(
      `out.write(JSON.stringify({ msg: "stopping" }) + "\\n");
      out.write(JSON.stringify({ msg: "stopped" }) + "\\n");
      writeSync(2, "stopped\\n");
      process.exit(0);`,
      (stderr) => stderr.includes("stopped"),
    );
    expect(code, stderr).toBe(0);
    // The exit hook's write, a newline first, may land within the long line (its rest follows:
    // process.exit waits for the pool's write); before, the stop's lines waited for its callback.
    const stop = '\n{"msg":"stopping"}\n{"msg":"stopped"}\n';
    expect(text.includes(stop), text.replace(/([.A])\1{20,}/g, "$1…")).toBe(true);
    expect(text.replace(stop, "").replace(/^\.+/, "")).toBe(big(200_000));
  }, 60_000);

  it("a second Ctrl-C's kill while every pool thread hangs, a long line's write queued for one: the stop's lines are written", async () => {
    const { dir, fd, reader } = readFifo();
    const wedge = join(dir, "wedge.fifo");
    execFileSync("mkfifo", [wedge]);
    let open: number | undefined = fd;
    try {
      // As main.ts's second SIGINT: the pool's one thread held by a read nobody answers (a
      // wedged mount), then atExit and SIGINT's default action.
      const { child, stderr } = logChild(
        fd,
        `const { openSync, read } = await import("node:fs");
        read(openSync(${JSON.stringify(wedge)}, "r+"), Buffer.alloc(1), () => {});
        ${logBig(5000)}
        out.toSync();
        out.write(JSON.stringify({ msg: "stopping" }) + "\\n");
        out.write(JSON.stringify({ code: "CLI_STOP_ABANDONED" }) + "\\n");
        out.atExit();
        process.kill(process.pid, "SIGINT");`,
        { env: { UV_THREADPOOL_SIZE: "1" } },
      );
      const signal = await new Promise((r) => child.once("exit", (_, s) => r(s)));
      expect(signal, stderr()).toBe("SIGINT");
      closeSync(fd);
      open = undefined;
      const text = await reader.text;
      // The long line's write never began (the kill ended it); the newline begun with, as it might
      // have, makes an empty line. Before, the lines waited for its callback: none came.
      expect(
        text.split("\n").filter((l) => l !== ""),
        JSON.stringify(text),
      ).toEqual(['{"msg":"stopping"}', '{"code":"CLI_STOP_ABANDONED"}']);
    } finally {
      reader.child.kill();
      if (open !== undefined) closeSync(open);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("the exit on a non-blocking pipe nobody reads: the lines left queued are counted", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-alog-"));
    const fifo = fullFifo(dir);
    const { child, stderr } = logChild(
      fifo.fd,
      `process.once("exit", () => {
        out.atExit();
        writeSync(2, "dropped " + out.dropped + "\\n");
      });
      readSync(0, Buffer.alloc(1));
      for (let i = 0; i < 3; i++) out.write(JSON.stringify({ msg: "line", i }) + "\\n");
      process.exit(0);`,
    );
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    let nonBlocking: Socket | undefined;
    try {
      nonBlocking = makeNonBlocking(fifo.fd, child.pid!);
      child.stdin!.write("g");
      expect(await exited, stderr()).toBe(0);
      // The pool's write of the first is under way, its outcome unknown; the two behind it get
      // EAGAIN through the retries (before, they were lost uncounted).
      expect(stderr()).toContain("dropped 2\n");
    } finally {
      child.kill("SIGKILL");
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

  it("a pipe whose reader is gone: the lines are dropped and counted, the agent runs and stops, exiting 0, and a new reader is told how many", async () => {
    const a = env.all[0];
    const path = join(a.dir, "stdout.fifo");
    rmSync(path, { force: true });
    execFileSync("mkfifo", [path]);
    const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = openSync(path, constants.O_WRONLY);
    let open = [reader, writer];
    let drained: ReturnType<typeof drain> | undefined;
    try {
      await restartOn(a, writer);
      // No reader left: every write to the agent's stdout fails with EPIPE.
      for (const fd of open) closeSync(fd);
      open = [];
      await env.agents.waitReady(a, 30_000);
      expect((await env.agents.status(a)).ready).toBe(true);
      const metrics = String(await agentRequest(a.dir, "GET", "/metrics"));
      const dropped = Number(/^weft_log_lines_dropped_total (\d+)$/m.exec(metrics)?.[1]);
      expect(dropped, metrics).toBeGreaterThan(0);
      // A FIFO's new reader takes the lines again: the stop's first line is followed by the notice.
      // Opened here, so that it is open before the stop; also a writer, so read until "stopped".
      open = [openSync(path, constants.O_RDWR)];
      drained = drain(open[0]);
      a.process!.kill("SIGTERM");
      expect(await env.agents.exited(a, 30_000)).toBe(0);
      const text = await until(
        'the line "stopped"',
        () => (drained!.soFar().includes('"msg":"stopped"') ? drained!.soFar() : undefined),
        20_000,
      );
      const lines = text.split("\n").filter((l) => l.startsWith("{"));
      const notices = lines.filter((l) => l.includes('"code":"CLI_LOG_LINES_DROPPED"'));
      // One, or two if a pool write made before the new reader failed with EPIPE after the first
      // notice was out (one pool write is under way at a time); they count every line dropped.
      expect(notices.length, lines.join("\n")).toBeGreaterThanOrEqual(1);
      expect(notices.length, lines.join("\n")).toBeLessThanOrEqual(2);
      const said = notices.reduce((sum, l) => sum + JSON.parse(l).dropped, 0);
      expect(said).toBeGreaterThanOrEqual(dropped);
      expect(lines.at(-1)).toContain('"msg":"stopped"');
    } finally {
      drained?.child.kill();
      for (const fd of open) closeSync(fd);
      await restore(a, path);
    }
  }, 120_000);
});
