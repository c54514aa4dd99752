// The dataplane's workers live in native calls, and piscina terminates them: when one dies and is
// replaced, and when the pool is destroyed at stop. A terminating thread's Node-API calls fail,
// and node-addon-api aborted the whole process when it could not throw the resulting error
// (NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS in native/binding.gyp). The terminations run in a
// child process, since the failure takes the process that holds the threads.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { addonPath } from "../../src/io/native.js";

const TERMINATIONS = 200;

// Each worker loops over a call that fails (closing an fd that is not open throws EBADF, built by
// ThrowSyscallError) and calls that succeed; the parent terminates it at a random point.
const child = `
const { Worker } = require("node:worker_threads");
const worker = \`
  const { parentPort, workerData } = require("node:worker_threads");
  const io = require(workerData);
  parentPort.postMessage("looping");
  for (;;) {
    try { io.closeFd(2147483000); } catch {}
    const fd = io.wakerOpen();
    io.wakerSignal(fd);
    io.wakerDrain(fd);
    io.closeFd(fd);
  }
\`;
(async () => {
  for (let i = 0; i < ${TERMINATIONS}; i++) {
    const w = new Worker(worker, { eval: true, workerData: process.argv[1] });
    await new Promise((r) => w.once("message", r));
    await new Promise((r) => setTimeout(r, Math.random() * 3));
    await w.terminate();
  }
  process.stdout.write("terminated ${TERMINATIONS}");
})();
`;

describe("worker threads terminated inside native calls", () => {
  it(`never take the process down (${TERMINATIONS} terminations, mid-call and mid-throw)`, () => {
    const r = spawnSync(process.execPath, ["-e", child, addonPath], { encoding: "utf8", timeout: 50_000 });
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: "" });
    expect(r.stdout).toBe(`terminated ${TERMINATIONS}`);
  });
});
