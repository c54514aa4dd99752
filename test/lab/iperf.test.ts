// iperf() between two namespaces joined by a veth: normal TCP and UDP runs give results with the
// client's timeouts on; a run whose path drops everything ends as iperf3's own error once the
// control connection cannot be set up, and one killed at its limit says what both ends looked like;
// a TCP stream that stalls beside ping under load's flood ends timed out, which is measured again.
// Without iperf3 or ping on PATH, runs fail saying so, and checkTrafficTools says so before any.
import { spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { WeftError } from "../../src/errors.js";
import type { LabPod } from "../../src/lab/cluster.js";
import { pingUnderLoad } from "../../src/bench/load.js";
import { retryable } from "../../src/bench/workloads.js";
import { checkTrafficTools, iperf, ping } from "../../src/lab/traffic.js";
import { parseIpv4 } from "../../src/net/ipv4.js";
import { until } from "../io/until.js";
import { canUseNetns, Netns, vethPair } from "../support/netns.js";
import { pathWithout } from "../support/path-without.js";

const work = mkdtempSync(join(tmpdir(), "weft-iperf-test-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Two pods (only what iperf() reads of one) on a veth; `run` gets them, then both are removed. */
async function withPods(run: (server: LabPod, client: LabPod) => Promise<void>): Promise<void> {
  const a = await Netns.create("ipfs");
  const b = await Netns.create("ipfc");
  try {
    await vethPair(a, "eth0", "198.19.0.1/24", b, "eth0", "198.19.0.2/24");
    const pod = (name: string, ns: Netns, addr: string) => ({ name, ns, addr: parseIpv4(addr) }) as unknown as LabPod;
    await run(pod("server", a, "198.19.0.1"), pod("client", b, "198.19.0.2"));
  } finally {
    await Promise.all([a.destroy(), b.destroy()]);
  }
}

/** Drops the TCP packets that `match` (an nft match) picks among those arriving in a pod's namespace. */
const dropIn = (pod: LabPod, match: string) =>
  pod.ns.exec([
    "nft",
    `add table inet t; add chain inet t in { type filter hook input priority 0 ; }; add rule inet t in ${match} drop`,
  ]);

const failure = async (p: Promise<unknown>) => {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(WeftError);
  return e as WeftError;
};

describe("checkTrafficTools", () => {
  it("names each of iperf3 and ping missing from PATH, and how to install them", () => {
    const path = pathWithout(join(work, "check"), ["iperf3", "ping"]);
    expect(() => checkTrafficTools(path)).toThrow(
      expect.objectContaining({
        code: "LAB_TRAFFIC_TOOL_MISSING",
        message: expect.stringMatching(/^iperf3 and ping not found on PATH .*apt-get install iperf3 iputils-ping/),
      }),
    );
    expect(() => checkTrafficTools(`${path}:/nonexistent`)).toThrow(/^iperf3 and ping not found/);
  });

  it.runIf(canUseNetns())("passes on this machine's PATH, which the lab tests run with", () => {
    checkTrafficTools();
  });
});

describe.skipIf(!canUseNetns())("lab iperf3 runs", () => {
  it("TCP and UDP runs give their results", async () => {
    await withPods(async (server, client) => {
      const tcp = await iperf(server, client, { seconds: 1 });
      expect(tcp.receivedBytes).toBeGreaterThan(0);
      const udp = await iperf(server, client, { seconds: 1, udp: true, bitrate: "10M" });
      expect(udp.packets).toBeGreaterThan(0);
    });
  }, 30_000);

  it("a control connection that cannot be set up is iperf3's own timeout, before the limit", async () => {
    await withPods(async (server, client) => {
      await dropIn(server, "tcp dport 5290");
      const e = await failure(iperf(server, client, { seconds: 1, port: 5290, limitMs: 20_000 }));
      expect(e.code, e.message).toBe("LAB_IPERF_TIMED_OUT");
      expect(e.message).toMatch(/connect.*--connect-timeout 5000/i);
    });
  }, 30_000);

  it("a run killed at its limit carries both ends' sockets, the server's output and the time it took", async () => {
    await withPods(async (server, client) => {
      await dropIn(server, "tcp dport 5291");
      const e = await failure(iperf(server, client, { seconds: 1, port: 5291, limitMs: 1500 }));
      expect(e.code, e.message).toBe("LAB_IPERF_NO_RESULT");
      expect(e.message).toMatch(/killed after \d+\.\d s/);
      // The client's SYN never answered; the server listening.
      expect(e.detail).toMatch(/client ss -tino:\n.*SYN-SENT.*198\.19\.0\.1:5291/s);
      expect(e.detail).toMatch(/server ss -tino:\n/);
      expect(e.detail).toMatch(/^client: iperf3 -c 198\.19\.0\.1 .*--connect-timeout 5000 --snd-timeout 10000/);
      expect(e.detail).toContain(
        "server output:\n-----------------------------------------------------------\nServer listening on 5291",
      );
    });
  }, 30_000);

  it("a TCP stream that stalls beside the flood of ping under load times out, and is measured again", async () => {
    await withPods(async (server, client) => {
      // Long enough for --snd-timeout's 10 s to run out before the stream's end closes its socket,
      // with 4 s for the drop below to land once the stream runs (a loaded machine is slow to).
      const run = failure(pingUnderLoad(client, server, { seconds: 14, pingCount: 10, pingIntervalS: 0.1 }));
      // Once the stream runs (a connection has had 1 MB acknowledged: only the TCP stream's, the
      // control connections carry a few kB), its full-sized segments go nowhere; the control
      // connections' small messages, the flood (UDP) and the pings still get through. Not a fixed
      // wait from here: the iperf3s start late on a loaded machine, and the stream's end with them.
      try {
        await until(
          "the TCP stream to run",
          async () => {
            const ss = await client.ns.exec(["ss", "-tinH", "state", "established"]);
            return [...ss.matchAll(/bytes_acked:(\d+)/g)].some(([, n]) => Number(n) >= 1_000_000) ? true : undefined;
          },
          10_000,
        );
      } catch (e) {
        // The run ends before withPods deletes the namespaces it runs in, its failure not unhandled.
        await run.catch(() => {});
        throw e;
      }
      await dropIn(server, "meta l4proto tcp ip length > 1000");
      const e = await run;
      expect(e.code, e.message).toBe("LAB_IPERF_TIMED_OUT");
      expect(e.message).toMatch(/^iperf3 client -> server: .*timed out.*--snd-timeout 10000: the path stalled\)$/);
      expect(retryable("loaded-rtt", e.code)).toBe(true);
      expect(retryable("tcp", e.code)).toBe(false);
    });
  }, 60_000);

  it("ping under load names every part that failed, not only the first", async () => {
    await withPods(async (server, client) => {
      // Neither iperf3 can set up its control connection; the pings still get through.
      await dropIn(server, "meta l4proto tcp");
      const e = await failure(pingUnderLoad(client, server, { seconds: 4, pingCount: 10, pingIntervalS: 0.1 }));
      expect(e.code, e.message).toBe("LAB_IPERF_TIMED_OUT");
      expect(e.message).toMatch(/^TCP: \[LAB_IPERF_TIMED_OUT\] iperf3 .*; UDP: \[LAB_IPERF_TIMED_OUT\] iperf3 /);
    });
  }, 30_000);

  it("without iperf3 or ping on PATH, a run fails with LAB_TRAFFIC_TOOL_MISSING naming the program", async () => {
    const path = pathWithout(join(work, "runs"), ["iperf3", "ping"]);
    await withPods(async (server, client) => {
      const saved = process.env.PATH;
      // `ip netns exec` looks the program up on the PATH it inherits.
      process.env.PATH = path;
      try {
        const e = await failure(iperf(server, client, { seconds: 1 }));
        expect(e.code, e.message).toBe("LAB_TRAFFIC_TOOL_MISSING");
        expect(e.message).toMatch(/^cannot run iperf3 in a pod: .*apt-get install iperf3 iputils-ping$/);
        const p = await failure(ping(client, server.addr, { count: 1 }));
        expect(p.code, p.message).toBe("LAB_TRAFFIC_TOOL_MISSING");
        expect(p.message).toMatch(/^cannot run ping in a pod: /);
      } finally {
        process.env.PATH = saved;
      }
    });
  }, 30_000);

  it("a tool that fails says what it wrote, also what came after its exit", async () => {
    // A ping whose complaint comes from a child it left, after it exited.
    const dir = join(work, "late-stderr");
    mkdirSync(dir);
    writeFileSync(join(dir, "ping"), "#!/bin/sh\n(sleep 0.3; echo late complaint >&2) >/dev/null &\nexit 2\n");
    chmodSync(join(dir, "ping"), 0o755);
    await withPods(async (server, client) => {
      const saved = process.env.PATH;
      process.env.PATH = `${dir}:${saved}`;
      try {
        const e = await failure(ping(client, server.addr, { count: 1 }));
        expect(e.code, e.message).toBe("LAB_TRAFFIC_TOOL_FAILED");
        expect(e.message).toMatch(/exited 2: late complaint$/);
      } finally {
        process.env.PATH = saved;
      }
    });
  }, 30_000);

  it("a server that cannot listen fails with what it said", async () => {
    await withPods(async (server, client) => {
      // Another iperf3 server holds the port on the same address.
      const [cmd, ...argv] = server.ns.wrap(["iperf3", "-s", "-B", "198.19.0.1", "-p", "5292"]);
      const holder = spawn(cmd, argv, { stdio: "ignore" });
      try {
        // Bounded: 5 s for it to listen.
        for (let t = 0; t < 50 && !(await server.ns.exec(["ss", "-tln"])).includes(":5292 "); t++)
          await new Promise((r) => setTimeout(r, 100));
        const e = await failure(iperf(server, client, { seconds: 1, port: 5292 }));
        expect(e.code, e.message).toBe("LAB_IPERF_SERVER_EXITED");
        expect(e.message).toMatch(/^iperf3 server exited \(\d+\) before listening: .*Address already in use/);
      } finally {
        holder.kill("SIGKILL");
      }
    });
  }, 30_000);
});
