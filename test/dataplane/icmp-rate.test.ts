// The ICMP error rate limit end to end: a pod floods an address of the pod network that no node
// leases, and wasm-vxlan's dataplanes (dual-stack, one per family, on one host) write back at most
// a burst of errors plus one per millisecond per worker, counting the rest as ICMP_RATE_LIMITED.
// Without the limit every request got its error.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeSubnetEnv } from "../../src/agent/subnet-env.js";
import type { Backend, BackendContext } from "../../src/backends/backend.js";
import { createBackend } from "../../src/backends/index.js";
import { withNetns } from "../../src/io/netns.js";
import { LabCluster, LAB_POD_NETWORK, LAB_POD_NETWORK6, type LabHost } from "../../src/lab/cluster.js";
import { ping } from "../../src/lab/traffic.js";
import { parseIpv4, parsePrefix } from "../../src/net/ipv4.js";
import { parseIpv6, parsePrefix6 } from "../../src/net/ipv6.js";
import { labUnderlay } from "../backends/support.js";
import { canUseNetns } from "../support/netns.js";

const WORKERS = 2;
/** Linux's defaults, which the dataplane takes: errors a second and the burst, per worker. */
const PER_SEC = 1000;
const BURST = 50;
/** Requests in the flood: far more than the limit lets through while ping sends them. */
const FLOOD = 5000;
const SUBNET = { 4: parsePrefix("198.19.1.0/24"), 6: parsePrefix6("2001:2:0:8001::/64") };
/** Inside the pod network, leased by no node: the dataplane has no route and answers with an error. */
const UNLEASED = { 4: parseIpv4("198.19.9.1"), 6: parseIpv6("2001:2:0:8009::1") };

describe.skipIf(!canUseNetns())("ICMP error rate limit (wasm-vxlan, dual-stack)", () => {
  let lab: LabCluster;
  let host: LabHost;
  const dir = mkdtempSync(join(tmpdir(), "weft-icmp-rate-"));
  const backends: Partial<Record<4 | 6, Backend>> = {};

  const ctx = (family: 4 | 6): BackendContext => ({
    kernel: host.ns.kernel,
    network: family === 4 ? LAB_POD_NETWORK : LAB_POD_NETWORK6,
    subnet: SUBNET[family],
    underlay: labUnderlay(host),
    stateDir: dir,
    logger: pino({ level: "silent" }),
  });

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "icr", hosts: 1, ipv6: true });
    [host] = lab.hosts;
    const file = join(lab.hostDir(host), "subnet.env");
    await writeSubnetEnv(file, {
      v4: { network: LAB_POD_NETWORK, subnet: SUBNET[4] },
      v6: { network: LAB_POD_NETWORK6, subnet: SUBNET[6] },
      mtu: 1450,
      ipMasq: false,
    });
    await lab.addPodsFromSubnetFile(host, file, 1);
    for (const family of [4, 6] as const) {
      // The dataplane opens its TUN device and sockets in the calling thread's namespace.
      const b = withNetns(host.ns.name, () => createBackend("wasm-vxlan", { workers: WORKERS }, ctx(family)));
      backends[family] = b;
      await b.start();
    }
  });

  afterAll(async () => {
    for (const b of Object.values(backends)) await b.stop(false).catch(() => undefined);
    await lab?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const family of [4, 6] as const) {
    it(`IPv${family}: a pod's flood to an unleased address gets at most a burst plus one error a millisecond per worker; the rest are counted ICMP_RATE_LIMITED`, async () => {
      const dp = backends[family]!;
      const pod = host.pods[0];
      // Errors first, one at a time: the pod's IPv6 address leaves DAD and the pod resolves its
      // gateway, whose neighbour queue would drop the flood's start.
      let warm = 0;
      for (let t = 0; t < 10 && warm === 0; t++)
        warm = (await ping(pod, UNLEASED[family], { count: 1, timeoutS: 1 })).unreachable;
      expect(warm).toBe(1);
      const before = dp.dataplaneCounters!();
      const started = performance.now();
      // -i 0 with every request preloaded: ping sends as fast as it can, not slowed by missing answers.
      const r = await ping(pod, UNLEASED[family], { count: FLOOD, intervalS: 0, preload: FLOOD, timeoutS: 0.2 });
      const seconds = (performance.now() - started) / 1000;
      const after = dp.dataplaneCounters!();
      const tx = (name: string) => Number(after.tx.packets[name] - before.tx.packets[name]);
      // Requests that never reached the hot path: the TUN ring's drops, the flow queue's.
      const queued =
        Number((after.tunRingDrops ?? 0n) - (before.tunRingDrops ?? 0n)) +
        Number(after.io.flowQueueDrops - before.io.flowQueueDrops);
      expect(r.unreachable).toBeGreaterThan(0);
      expect(r.unreachable).toBeLessThanOrEqual(tx("REPLY"));
      // A generous bound: the whole run's time, every worker's bucket (a flow stays on one worker).
      expect(tx("REPLY")).toBeLessThanOrEqual(WORKERS * (BURST + PER_SEC * seconds));
      // The limit took effect: ping's preloaded flood came faster than the buckets refill.
      expect(tx("ICMP_RATE_LIMITED")).toBeGreaterThan(0);
      expect(tx("REPLY") + tx("ICMP_RATE_LIMITED") + queued).toBe(FLOOD);
    });
  }
});
