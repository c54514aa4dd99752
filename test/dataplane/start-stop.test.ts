// stop() racing start() on a real dataplane (and its backend) in a lab namespace: the kernel's
// `ip -batch` of start() (or the backend's stale-route removal after it) is held after it ran
// until the test lets it return, so stop() comes exactly where an agent shut down during startup
// would.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Backend } from "../../src/backends/backend.js";
import { createBackend } from "../../src/backends/index.js";
import { withNetns } from "../../src/io/netns.js";
import { LabCluster } from "../../src/lab/cluster.js";
import type { Kernel } from "../../src/kernel/iproute.js";
import { hostCtx, type HostCtx } from "../backends/support.js";
import { makeDataplane, subnetOf } from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";

/** `real`, whose `method` does its work and then waits for release() before it returns. */
function heldKernel(real: Kernel, method: "ipBatch" | "ipBatchForce" = "ipBatch") {
  let release!: () => void;
  let ran!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const done = new Promise<void>((r) => (ran = r));
  const kernel: Kernel = Object.assign(Object.create(real), {
    async [method](lines: string[]) {
      const result = await real[method](lines);
      ran();
      await held;
      return result;
    },
  });
  return { kernel, ran: done, release };
}

describe.skipIf(!canUseNetns())("userspace dataplane stop() during start()", () => {
  let lab: LabCluster;
  const ctxs: HostCtx[] = [];
  const stops: Array<() => Promise<unknown>> = [];

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "dpstop", hosts: 1 });
  });
  afterAll(async () => {
    for (const stop of stops) await stop().catch(() => undefined);
    for (const c of ctxs) c.cleanup();
    await lab?.destroy();
  });

  const context = () => {
    const c = hostCtx(lab.hosts[0], subnetOf(1));
    ctxs.push(c);
    return c;
  };
  const tunGone = async (name: string) => !(await lab.hosts[0].ns.ip("-o link show")).includes(`: ${name}:`);

  it("makes a pending start() reject with DATAPLANE_STOPPED and start no workers", async () => {
    const host = lab.hosts[0];
    const c = context();
    const dp = makeDataplane(host, 1, "vxlan", { logger: c.ctx.logger });
    stops.push(() => dp.stop());
    const { kernel, ran, release } = heldKernel(host.ns.kernel);
    const starting = dp.start(kernel);
    await ran;
    await dp.stop();
    release();
    await expect(starting).rejects.toMatchObject({ code: "DATAPLANE_STOPPED" });
    const msgs = c.log.lines.map((l) => l.msg);
    expect(msgs).toContain("userspace dataplane stopped");
    expect(msgs.filter((m) => m.startsWith("userspace dataplane started"))).toEqual([]);
    expect(dp.counters().workerRestarts).toBe(0);
    expect(await tunGone("weft0")).toBe(true);
  });

  it("makes a second stop() wait until the first has closed the TUN device", async () => {
    const host = lab.hosts[0];
    const dp = makeDataplane(host, 1, "vxlan");
    stops.push(() => dp.stop());
    await dp.start(host.ns.kernel);
    expect(await tunGone("weft0")).toBe(false);
    let firstDone = false;
    const first = dp.stop().then(() => (firstDone = true));
    await dp.stop();
    expect(firstDone).toBe(true);
    expect(await tunGone("weft0")).toBe(true);
    await first;
  });

  it("leaves a backend stopped during its start stopped, not running", async () => {
    const host = lab.hosts[0];
    const c = context();
    const { kernel, ran, release } = heldKernel(host.ns.kernel);
    const backend: Backend = withNetns(host.ns.name, () =>
      createBackend("wasm-vxlan", { workers: 1 }, { ...c.ctx, kernel }),
    );
    stops.push(() => backend.stop(false));
    expect(await tunGone("weft.1")).toBe(false);
    const starting = backend.start();
    await ran;
    await backend.stop(false);
    release();
    await expect(starting).rejects.toMatchObject({ code: "DATAPLANE_STOPPED" });
    await expect(backend.removePeer("nobody")).rejects.toMatchObject({ code: "BACKEND_NOT_RUNNING" });
    expect(backend.counters().kernelErrors).toBe(0);
    expect(await tunGone("weft.1")).toBe(true);
  });

  it("leaves a backend stopped while it removes stale gateway routes stopped, with no device, route or socket behind", async () => {
    const host = lab.hosts[0];
    const c = context();
    const sockets = () => host.ns.exec(["ss", "-Hlun", "sport = :8472"]);
    // flannel's host-gw route to a peer's subnet, which the start removes after the dataplane is up.
    await host.ns.ip("route add 198.19.5.0/24 via 198.18.0.12 dev eth0");
    const { kernel, ran, release } = heldKernel(host.ns.kernel, "ipBatchForce");
    const backend: Backend = withNetns(host.ns.name, () =>
      createBackend("wasm-vxlan", { workers: 1 }, { ...c.ctx, kernel }),
    );
    stops.push(() => backend.stop(false));
    const starting = backend.start();
    await ran;
    expect(await tunGone("weft.1")).toBe(false);
    expect(await sockets()).not.toBe("");
    await backend.stop(false);
    release();
    // Before, the start went on to say running (and logged it started) with its dataplane stopped.
    await expect(starting).rejects.toMatchObject({ code: "DATAPLANE_STOPPED" });
    await expect(backend.removePeer("nobody")).rejects.toMatchObject({ code: "BACKEND_NOT_RUNNING" });
    expect(c.log.lines.map((l) => l.msg)).not.toContain("wasm-vxlan backend started");
    expect(backend.counters().kernelErrors).toBe(0);
    expect(await tunGone("weft.1")).toBe(true);
    expect(await host.ns.ip("-4 route show 198.19.0.0/16")).toBe("");
    expect(await sockets()).toBe("");
  });

  it("makes a backend's second stop wait until the first has closed the TUN device", async () => {
    const host = lab.hosts[0];
    const c = context();
    const backend: Backend = withNetns(host.ns.name, () => createBackend("wasm-vxlan", { workers: 1 }, c.ctx));
    stops.push(() => backend.stop(false));
    await backend.start();
    let firstDone = false;
    const first = backend.stop(false).then(() => (firstDone = true));
    await backend.stop(false);
    expect(firstDone).toBe(true);
    expect(await tunGone("weft.1")).toBe(true);
    await first;
  });
});
