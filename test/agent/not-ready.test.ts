// What a real agent says while it is not ready, with its backend-change queue held by a task
// under way: a reload reading net-conf.json, made a FIFO so that the read lasts until the test
// writes it. A backend that fails meanwhile makes the node not ready at once (before, /readyz
// answered 200 and weft_ready read 1 until the queue got to the failure), and a graceful stop says
// "stopping" (before, the last reason stayed). weft status gives the join's times as ISO text.
// A restarted backend that fails while its restart publishes it (its TUN device deleted again at
// once; the publish held in an nft that waits on a FIFO) leaves the node
// not ready: before, the publish said "ready" (/readyz 200, weft_ready 1) until the new failure's
// task ran, and the restart logged AGENT_BACKEND_RESTARTED. So does one that fails while it is
// still starting (held in an ip that waits, reading the default route): before, its failure
// counted only once start() returned, and the publish said ready.
import { execFileSync } from "node:child_process";
import { chmodSync, closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import type { LabAgent } from "../../src/lab/agents.js";
import { canUseNetns } from "../support/netns.js";
import { toolPath } from "../support/refusing-tool.js";
import { agentLab, eventually, logRecords, netConf } from "./support.js";

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/**
 * The second agent's PATH starts here: a `tool` that, while a FIFO `hold-<tool>` is beside it and
 * its arguments match `args` (a case pattern), runs and then reads a line from the FIFO (and
 * removes it) before it answers. Returns the FIFO's path.
 */
const bin = mkdtempSync(join(tmpdir(), "weft-anr-"));
function holdingTool(tool: "nft" | "ip", args: string): string {
  const hold = join(bin, `hold-${tool}`);
  const real = toolPath(tool);
  writeFileSync(
    join(bin, tool),
    [
      "#!/bin/sh",
      `[ -p ${hold} ] || exec '${real}' "$@"`,
      `case " $* " in ${args}) ;; *) exec '${real}' "$@" ;; esac`,
      `out=$('${real}' "$@"); rc=$?`,
      `read -r _ < ${hold}; rm -f ${hold}`,
      `[ -z "$out" ] || printf '%s\\n' "$out"`,
      "exit $rc",
      "",
    ].join("\n"),
  );
  chmodSync(join(bin, tool), 0o755);
  return hold;
}
/** Any nft: a publish's ip-masq. */
const HOLD_NFT = holdingTool("nft", "*");
/** The userspace backend's start reading the default route (its removal of stale gateway routes). */
const HOLD_IP = holdingTool("ip", '*" route show table main default "*');
afterAll(() => rmSync(bin, { recursive: true, force: true }));

/** A write end of the FIFO at `path`, once a reader has it open (undefined before: ENXIO). */
function writerOf(path: string): number | undefined {
  try {
    return openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
}

describe.skipIf(!canUseNetns())("agent: why it is not ready, behind a backend change under way", () => {
  const env = agentLab({
    tag: "anr",
    hosts: 2,
    conf: () => netConf("wasm-vxlan"),
    settled: { what: "its peer", check: (s) => s.ready && s.peers.length === 1 },
    setup: (a) => {
      if (a === env.all[1]) a.env = { PATH: `${bin}:${process.env.PATH}` };
    },
  });

  /** /readyz on weft.sock: [status, body]. */
  const readyz = (a: LabAgent) =>
    agentRequest(a.stateDir, "GET", "/readyz").then(
      (body): [number, string] => [200, String(body)],
      (err: Error): [number, string] => [503, err.message],
    );
  /** The ifindex of a's device `dev`; undefined if there is none. */
  const ifindex = (a: LabAgent, dev: string) =>
    a.host.ns.ip(`-o link show dev ${dev}`).then(
      (out) => /^(\d+):/.exec(out)?.[1],
      () => undefined,
    );
  const weftReady = async (a: LabAgent) =>
    /^weft_ready (\d)$/m.exec((await agentRequest(a.stateDir, "GET", "/metrics")) as string)?.[1];

  /**
   * Holds a's backend-change queue with a SIGHUP whose reload reads a FIFO put in net-conf.json's
   * place. Resolves once the reload has opened it (a write end opens without blocking only then),
   * so that what the test does next comes behind it; the returned release writes the config
   * through that end, which ends the reload, and puts the plain file back.
   */
  async function holdQueue(a: LabAgent): Promise<() => Promise<void>> {
    const path = env.agents.netConfPath(a);
    const text = await readFile(path, "utf8");
    await rm(path);
    execFileSync("mkfifo", [path]);
    env.agents.reload(a);
    const writer = await eventually(
      "the reload to open the FIFO",
      async () => writerOf(path),
      (fd) => fd !== undefined,
      10_000,
    );
    return async () => {
      writeSync(writer!, text);
      closeSync(writer!);
      await rm(path);
      await writeFile(path, text);
    };
  }

  it("gives the join's times as ISO text", async () => {
    const s = (await env.agents.status(env.all[1])) as unknown as { join: Record<string, unknown> };
    expect(s.join.state).toBe("joined");
    expect(s.join.joinedAt).toMatch(ISO);
  });

  it("is not ready at once when its backend fails behind a reload under way, and runs a new one after it", async () => {
    const a1 = env.all[0];
    expect(await readyz(a1)).toEqual([200, "ready\n"]);
    const release = await holdQueue(a1);
    try {
      await a1.host.ns.ip("link del weft.1");
      const [code, body] = await eventually(
        "/readyz to say not ready",
        () => readyz(a1),
        ([c]) => c === 503,
        10_000,
      );
      expect(code).toBe(503);
      expect(body).toMatch(/not ready: a new IPv4 wasm-vxlan backend: the running one stopped carrying pod traffic/);
      expect(await weftReady(a1)).toBe("0");
    } finally {
      await release();
    }
    await env.agents.waitReady(a1, 30_000);
  });

  // While it starts, a stand-in weft.1 (a plain TUN device) lets the start's reconcile pass, as a
  // failure that leaves the device (a worker crash loop) would: else that reconcile fails the start.
  it.each([
    { when: "its restart publishes it", hold: HOLD_NFT, held: "the restart's publish to run nft", standIn: false },
    { when: "it starts", hold: HOLD_IP, held: "the restart's start to read the default route", standIn: true },
  ])("stays not ready when a restarted backend fails while $when", async ({ hold, held, standIn }) => {
    const a2 = env.all[1];
    const since = await env.agents.logSize(a2);
    const tunGone = async () =>
      (await logRecords(a2.dir, since)).filter((r) => /its TUN device is gone/.test(String(r.msg))).length;
    /** The stand-in's ifindex: the restart after the failure makes a weft.1 of its own (not while it is there). */
    let standInIndex: string | undefined;
    execFileSync("mkfifo", [hold]);
    try {
      await a2.host.ns.ip("link del weft.1");
      // The restart's new backend runs (or is starting); it waits in the held tool.
      const writer = await eventually(
        held,
        async () => writerOf(hold),
        (fd) => fd !== undefined,
        30_000,
      );
      const gone = await tunGone();
      await a2.host.ns.ip("link del weft.1");
      await eventually("the new backend to fail", tunGone, (n) => n > gone, 10_000);
      if (standIn) {
        await a2.host.ns.ip("tuntap add dev weft.1 mode tun");
        standInIndex = await ifindex(a2, "weft.1");
      }
      writeSync(writer!, "\n");
      closeSync(writer!);
      const records = await eventually(
        "the new failure's task",
        () => logRecords(a2.dir, since),
        (rs) => rs.filter((r) => r.code === "AGENT_BACKEND_FAILED").length === 2,
        30_000,
      );
      const second = records.map((r) => r.code).lastIndexOf("AGENT_BACKEND_FAILED");
      expect(records.slice(0, second).filter((r) => r.msg === "ready")).toEqual([]);
      // The restart brought nothing back: the second failure's line says so, not AGENT_BACKEND_RESTARTED.
      expect(records.slice(0, second).filter((r) => r.code === "AGENT_BACKEND_RESTARTED")).toEqual([]);
    } finally {
      await rm(hold, { force: true });
      // The next restart makes its own (the stand-in left would refuse it): the stand-in goes, but
      // not a weft.1 that restart made already (1 s after the failure, the finally may come later).
      if (standInIndex !== undefined && (await ifindex(a2, "weft.1")) === standInIndex)
        await a2.host.ns.ip("link del weft.1");
    }
    await env.agents.waitReady(a2, 30_000);
  });

  // Last: a1 ends here.
  it("says it is stopping while a stop waits for the reload under way", async () => {
    const a1 = env.all[0];
    const release = await holdQueue(a1);
    try {
      a1.process!.kill("SIGTERM");
      expect(
        await eventually(
          "/readyz to say stopping",
          () => readyz(a1),
          ([, body]) => body.includes("not ready: stopping"),
        ),
      ).toEqual([503, "agent answered 503: not ready: stopping"]);
    } finally {
      await release();
    }
    expect(await env.agents.exited(a1)).toBe(0);
  });
});
