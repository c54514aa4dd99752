// A node whose IPv4 subnet the ring gives to another node (made as a restored state dir makes it:
// host1's saved ring is edited while it is stopped, see restartGivingSubnet):
// - with a free slot left, it gets a new subnet, and a pod made after that is built on it: the
//   CNI bridge's gateway of the old subnet is removed first (the bridge plugin refuses a second
//   IPv4 address), a pod-network address of the user's on another device stays, and the pod is
//   reached from the other host;
// - when starting the backend for the new subnet (AGENT_BACKEND_RESTART_FAILED) or writing
//   subnet.env for it (AGENT_PUBLISH_FAILED) fails, it stays up, not ready with the reason, tries
//   again with backoff, and serves the new subnet once the cause is gone;
// - with none left, it waits for one; stopped then (SIGTERM), it exits 0 like any stop, and leaves
//   nothing of its backend behind;
// - lost while a backend swap is under way (its loss's task queued behind it): subnet.env goes at
//   once, and the swap's publish neither writes the lost subnet again nor says ready; nor does a
//   publish under way when the agent is stopped; a down lane's restart queued before the loss's
//   task (a SIGHUP's) does not start it on the lost subnet, nor does a swap queued so;
// - lost while the node was down: the subnet.env its restart kept goes once the join says so, and
//   if it cannot be removed, the agent exits 1 (AGENT_FATAL).
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, rm, rmdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import { VTEP_MAC_FILE } from "../../src/backends/vtep-mac.js";
import { STATE_FILE } from "../../src/control/lease/store.js";
import { atomicTempPath } from "../../src/fs/atomic-write.js";
import { pingWhenRouted } from "../../src/lab/traffic.js";
import { formatIpv4, parsePrefix, prefixContains } from "../../src/net/ipv4.js";
import { canUseNetns } from "../support/netns.js";
import {
  agentLab,
  coded,
  eventually,
  firstAddress,
  holdNetConf,
  logRecords,
  overlayDevices,
  restartGivingSubnet,
  watchKernelEvents,
  NETWORK,
  type AgentLab,
} from "./support.js";

/** host1's restored ring gives host2's subnet to host1 (a free slot of its); waits until host2 is told (LEASE_LOST after `since`). */
const giveAwayHost2sSubnet = async (env: AgentLab, since: number) => {
  const [a1, a2] = env.all;
  await restartGivingSubnet(env.agents, a1, STATE_FILE, a2.host.name, a1.host.name, false);
  await eventually(
    "host2 told of the loss",
    () => coded(a2.dir, since, "LEASE_LOST"),
    (r) => r.length === 1,
    30_000,
  );
};

/** The address a vxlan device of `subnet` gets, as `ip monitor` shows it. */
const address = (subnet: string) => `inet ${formatIpv4(parsePrefix(subnet).addr)}/32`;

describe.skipIf(!canUseNetns())("agents: a lost IPv4 subnet, replaced", () => {
  const env = agentLab({
    tag: "al4",
    hosts: 2,
    conf: () => ({ Network: NETWORK, Backend: { Type: "vxlan" } }),
    settled: { what: "its peer", check: (s) => s.ready && s.peers.length === 1 },
  });

  it("removes the old subnet's gateway from the CNI bridge, and a new pod gets the new subnet and is reached", async () => {
    const [a1, a2] = env.all;
    const lost = (await env.agents.status(a2)).subnet!;
    // An address of the user's own in the pod network, on a device that is no bridge (a veth; in the first
    // subnet, which is never leased): the preflight lets it be, and so must the gateway removal.
    await a2.host.ns.ip("link add weftkeep0 type veth peer name weftkeep1");
    await a2.host.ns.ip("addr add 198.19.0.1/24 dev weftkeep0");
    const since = await env.agents.logSize(a2);
    await restartGivingSubnet(env.agents, a1, STATE_FILE, a2.host.name, a1.host.name, false);
    const after = await env.agents.waitFor(
      a2,
      "a new subnet, ready again",
      (s) => s.ready && s.subnet !== undefined && s.subnet !== lost && s.peers.length === 1,
      60_000,
    );
    const fresh = await env.lab.addPod(a2.host, env.agents.subnetFile(a2));
    expect(prefixContains(parsePrefix(after.subnet!), fresh.addr)).toBe(true);
    expect((await pingWhenRouted(a1.host.pods[0], fresh.addr)).received).toBe(2);
    const oldGateway = `${formatIpv4(parsePrefix(lost).addr + 1)}/${parsePrefix(lost).len}`;
    expect(await coded(a2.dir, since, "AGENT_STALE_POD_ADDRESS")).toEqual([
      expect.objectContaining({ dev: "cni0", address: oldGateway }),
    ]);
    expect(await a2.host.ns.ip("-4 -o addr show dev weftkeep0")).toContain("198.19.0.1/24");
  });

  /**
   * host2 loses its subnet while `cause` makes the new one's start or publish fail: it stays up
   * (before, the first failure ended the agent, exit 1), not ready with `waiting` as the reason and
   * no subnet.env, trying again (`code` twice) until `fix` removes the cause; then it serves the
   * new subnet: subnet.env names it, AGENT_SUBNET_REPLACED says so, a new pod on it is reached.
   */
  const failingReplacement = async (code: string, waiting: RegExp, cause: () => Promise<() => Promise<void>>) => {
    const [a1, a2] = env.all;
    const lost = (await env.agents.status(a2)).subnet!;
    const file = env.agents.subnetFile(a2);
    const fix = await cause();
    const since = await env.agents.logSize(a2);
    await restartGivingSubnet(env.agents, a1, STATE_FILE, a2.host.name, a1.host.name, false);
    const failures = async () => (await env.agents.errorLines(a2, since)).map((l) => l.code);
    const codes = await eventually(`${code} twice`, failures, (c) => c.filter((x) => x === code).length >= 2, 20_000);
    expect(codes.filter((c) => c !== code)).toEqual(["LEASE_LOST", "AGENT_SUBNET_LOST"]);
    expect(a2.process!.exitCode).toBe(null);
    const down = await env.agents.status(a2);
    expect(down.ready).toBe(false);
    expect(down.subnet).not.toBe(lost);
    expect((down as { waitingFor?: string }).waitingFor).toMatch(waiting);
    await expect(agentRequest(a2.stateDir, "GET", "/readyz")).rejects.toThrow(/not ready/);
    // The old subnet.env went before the stop and none is written yet: the CNI plugin hands out nothing.
    expect(existsSync(file)).toBe(false);
    expect(await coded(a2.dir, since, "AGENT_SUBNET_REPLACED")).toEqual([]);

    await fix();
    await env.agents.waitReady(a2, 30_000);
    const now = (await env.agents.status(a2)).subnet!;
    expect(now).toBe(down.subnet);
    expect(await readFile(file, "utf8")).toContain(`FLANNEL_SUBNET=${firstAddress(now)}\n`);
    expect(await coded(a2.dir, since, "AGENT_SUBNET_REPLACED")).toEqual([
      expect.objectContaining({ from: lost, to: now }),
    ]);
    const fresh = await env.lab.addPod(a2.host, file);
    expect(prefixContains(parsePrefix(now), fresh.addr)).toBe(true);
    expect((await pingWhenRouted(a1.host.pods[0], fresh.addr)).received).toBe(2);
  };

  it("writing subnet.env for the new subnet fails: it stays up, not ready, tries again, and writes it once the cause is gone", async () => {
    const a2 = env.all[1];
    await failingReplacement(
      "AGENT_PUBLISH_FAILED",
      /^publishing the new backend: .*AGENT_PUBLISH_FAILED/,
      async () => {
        // A directory where the agent writes its new subnet.env before renaming it into place: the
        // write fails (EISDIR), while the removal of the old subnet.env, before the stop, succeeds.
        const blocker = atomicTempPath(env.agents.subnetFile(a2), a2.process!.pid);
        await mkdir(blocker);
        return () => rmdir(blocker);
      },
    );
  });

  it("starting the backend for the new subnet fails: it stays up, not ready, tries again, and runs once the cause is gone", async () => {
    const a2 = env.all[1];
    await failingReplacement(
      "AGENT_BACKEND_RESTART_FAILED",
      /^a new IPv4 vxlan backend: .*does not hold a MAC/,
      async () => {
        // A damaged VTEP MAC file: the running backend has read it, the next start reads it and fails.
        const macFile = join(a2.stateDir, VTEP_MAC_FILE);
        const mac = await readFile(macFile, "utf8");
        await writeFile(macFile, "not a MAC\n");
        return () => writeFile(macFile, mac);
      },
    );
  });

  /**
   * Holds host2's next SIGHUP while it reads net-conf.json (the loss's task queues behind it),
   * takes host2's subnet away meanwhile, runs `meanwhile`, then lets the reload read `text`:
   * `device` is made on the new subnet once that is leased, never on the lost one.
   */
  const loseBehindReload = async (since: number, text: string, device: string, meanwhile?: () => Promise<void>) => {
    const a2 = env.all[1];
    const lost = (await env.agents.status(a2)).subnet!;
    const watch = await watchKernelEvents(a2.host);
    const release = await holdNetConf(env.agents, a2, text);
    env.agents.reload(a2);
    try {
      await giveAwayHost2sSubnet(env, since);
    } finally {
      // Even on a failure: the reload reading the FIFO holds the agent, and its stop, until then.
      await meanwhile?.();
      await release();
    }
    const now = await env.agents.waitFor(
      a2,
      "a new subnet, ready again",
      (st) => st.ready && st.subnet !== undefined && st.subnet !== lost,
      60_000,
    );
    const events = await watch.stop(device);
    // Before, the reload's start made the device with the lost subnet's address (and announced
    // it) until the loss's task stopped it again.
    expect(events.filter((e) => e.includes(address(lost)))).toEqual([]);
    expect(events.some((e) => e.includes(address(now.subnet!)))).toBe(true);
  };

  it("a SIGHUP's restart of a down lane, queued before the loss's task, starts nothing on the lost subnet: the loss's task starts it on the new one", async () => {
    const a2 = env.all[1];
    const macFile = join(a2.stateDir, VTEP_MAC_FILE);
    const mac = await readFile(macFile, "utf8");
    const inForce = await readFile(env.agents.netConfPath(a2), "utf8");
    const since = await env.agents.logSize(a2);
    // A damaged VTEP MAC file fails a swap and its way back: host2's lane is down, retried with backoff.
    await writeFile(macFile, "not a MAC\n");
    await writeFile(
      env.agents.netConfPath(a2),
      JSON.stringify({ Network: NETWORK, Backend: { Type: "vxlan", VNI: 2 } }),
    );
    env.agents.reload(a2);
    await eventually(
      "the way back failed",
      () => coded(a2.dir, since, "AGENT_ROLLBACK_FAILED"),
      (r) => r.length === 1,
      20_000,
    );
    expect(await overlayDevices(a2.host)).toEqual([]);
    // A SIGHUP with the config in force: its restart of the down lane.
    await loseBehindReload(since, inForce, "flannel.1", () => writeFile(macFile, mac));
    const order = (await logRecords(a2.dir, since)).flatMap((r) =>
      r.code === "AGENT_SUBNET_LOST" || r.code === "AGENT_BACKEND_RESTARTED" ? [r.code] : [],
    );
    expect(order).toEqual(["AGENT_SUBNET_LOST", "AGENT_BACKEND_RESTARTED"]);
    // The reload left the lane to the loss's task, and says so: before, it said it started it again.
    const reloaded = (await logRecords(a2.dir, since)).filter((r) => String(r.msg).startsWith("reloaded:"));
    expect(reloaded.map((r) => r.msg)).toEqual(["reloaded: the backend in force is the same, nothing to swap"]);
  });

  it("a SIGHUP's swap, queued before the loss's task, starts nothing on the lost subnet: the loss's task starts the new backend on the new one, as no failed backend's restart", async () => {
    const a2 = env.all[1];
    const since = await env.agents.logSize(a2);
    // A SIGHUP swapping to VNI 3.
    await loseBehindReload(
      since,
      JSON.stringify({ Network: NETWORK, Backend: { Type: "vxlan", VNI: 3 } }),
      "flannel.3",
    );
    // No failed backend was restarted: the swap stopped the lane, and the loss's task started it.
    // (The SIGHUP also re-reads the key file, at once: AGENT_KEYS_RELOADED is not the lane's.)
    const order = (await logRecords(a2.dir, since)).flatMap((r) =>
      r.msg === "ready"
        ? ["ready"]
        : typeof r.code === "string" && r.code.startsWith("AGENT_") && r.code !== "AGENT_KEYS_RELOADED"
          ? [r.code]
          : [],
    );
    expect(order).toEqual(["AGENT_SUBNET_LOST", "AGENT_SUBNET_REPLACED", "ready"]);
  });

  // Last: host2 ends here.
  it("removing subnet.env fails: it exits 1 under AGENT_FATAL, since the CNI plugin would go on handing out the lost subnet", async () => {
    const [a1, a2] = env.all;
    const file = env.agents.subnetFile(a2);
    await rm(file);
    await mkdir(join(file, "blocked"), { recursive: true });
    const since = await env.agents.logSize(a2);
    await restartGivingSubnet(env.agents, a1, STATE_FILE, a2.host.name, a1.host.name, false);
    expect(await env.agents.exited(a2, 60_000)).toBe(1);
    // A system error (EISDIR) is logged under the documented code, not its errno name.
    expect(await coded(a2.dir, since, "AGENT_FATAL")).toEqual([
      expect.objectContaining({ err: expect.objectContaining({ code: "ERR_FS_EISDIR" }) }),
    ]);
  });
});

/** Three hosts on vxlan, with three subnets to lease (flannel skips the first of the four): one per host. */
const threeHostLab = (tag: string) =>
  agentLab({
    tag,
    hosts: 3,
    conf: () => ({ Network: "198.19.0.0/22", Backend: { Type: "vxlan" } }),
    settled: { what: "its peers", check: (s) => s.ready && s.peers.length === 2 },
  });

describe.skipIf(!canUseNetns())("agents: a lost IPv4 subnet, none free", () => {
  const env = threeHostLab("alw");

  it("waits for a subnet; stopped meanwhile, it exits 0 without a fatal error and leaves no device", async () => {
    const [a1, a2, a3] = env.all;
    // host3 crashes (its subnet stays reserved for the grace period); host1's restored ring says
    // host3 took host2's subnet too, so no slot is free anywhere.
    await env.agents.stop(a3, "SIGKILL");
    const since = await env.agents.logSize(a2);
    await restartGivingSubnet(env.agents, a1, STATE_FILE, a2.host.name, a3.host.name, true);
    await env.agents.waitFor(a2, "waiting for a new subnet", (s) => !s.ready && s.subnet === undefined, 60_000);
    expect((await coded(a2.dir, since, "AGENT_SUBNET_")).map((r) => r.code)).toEqual(["AGENT_SUBNET_LOST"]);
    await env.agents.stop(a2, "SIGTERM");
    expect(await env.agents.exited(a2)).toBe(0);
    expect((await env.agents.errorLines(a2, since)).map((r) => r.code)).toEqual(["LEASE_LOST", "AGENT_SUBNET_LOST"]);
    const links = await a2.host.ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"]);
    expect(links.map((l) => l.ifname)).not.toContain("flannel.1");
  });
});

/**
 * host2 and host3 crash (host2's subnet.env stays); host1 restarts alone with a ring in which
 * host3 took host2's subnet, so none is free; then host2 comes back, still holding it on disk
 * (`before` runs just before). Returns host2's log size before it came back.
 */
const comeBackOnAGivenAwaySubnet = async (env: AgentLab, before?: () => Promise<unknown>): Promise<number> => {
  const [a1, a2, a3] = env.all;
  await env.agents.stop(a3, "SIGKILL");
  await env.agents.stop(a2, "SIGKILL");
  expect(await readFile(env.agents.subnetFile(a2), "utf8")).toContain("FLANNEL_SUBNET=");
  await restartGivingSubnet(env.agents, a1, STATE_FILE, a2.host.name, a3.host.name, true, []);
  const since = await env.agents.logSize(a2);
  await before?.();
  env.agents.start(a2, [], [a1]);
  return since;
};

describe.skipIf(!canUseNetns())("agents: a subnet lost while the node was down", () => {
  const env = threeHostLab("ald");

  it("the subnet.env its restart kept goes as soon as the join says the subnet is another node's", async () => {
    const a2 = env.all[1];
    const since = await comeBackOnAGivenAwaySubnet(env);
    await env.agents.waitFor(a2, "joined, waiting for a subnet", (s) => s.join.state === "joined" && !s.ready, 60_000);
    // Said once, and no AGENT_SUBNET_LOST: nothing had been programmed.
    await expect
      .poll(async () => (await coded(a2.dir, since, "AGENT_S")).map((r) => r.code))
      .toEqual(["AGENT_STALE_SUBNET_ENV"]);
    // Before, it stayed until a new subnet came, and new pods got host3's addresses.
    await expect(readFile(env.agents.subnetFile(a2), "utf8")).rejects.toMatchObject({ code: "ENOENT" });
    await env.agents.stop(a2, "SIGTERM");
    expect(await env.agents.exited(a2)).toBe(0);
  });
});

describe.skipIf(!canUseNetns())("agents: a subnet lost while the node was down, its subnet.env not removable", () => {
  const env = threeHostLab("ali");

  it("exits 1 under AGENT_FATAL, as once started, since the CNI plugin would hand out the new owner's addresses", async () => {
    const a2 = env.all[1];
    const file = env.agents.subnetFile(a2);
    // Immutable (chattr +i): its removal fails, root or not (EPERM, which rmSync reports as ENOTDIR).
    const chattr = (flag: string) => execFileSync("chattr", [flag, file]);
    try {
      const since = await comeBackOnAGivenAwaySubnet(env, async () => chattr("+i"));
      // Before, the failure was thrown into the lease layer's commit, and host2 ran on.
      expect(await env.agents.exited(a2, 40_000)).toBe(1);
      expect(await coded(a2.dir, since, "AGENT_FATAL")).toEqual([
        expect.objectContaining({ err: expect.objectContaining({ path: file }) }),
      ]);
    } finally {
      chattr("-i");
    }
  });
});

describe.skipIf(!canUseNetns())("agents: a subnet lost while a backend swap is under way", () => {
  // host2's `ip` commands that contain what the gate file holds (any, if it is empty) wait while it
  // exists (at most a minute): a SIGHUP swap is held in the backend-change queue meanwhile.
  const bin = join(tmpdir(), `weft-ip-gate-${process.pid}`);
  const gate = join(bin, "gate");
  const held = join(bin, "held");
  const env = agentLab({
    tag: "als",
    hosts: 2,
    conf: () => ({ Network: NETWORK, Backend: { Type: "vxlan" } }),
    settled: { what: "its peer", check: (s) => s.ready && s.peers.length === 1 },
    beforeStart: async () => {
      const ip = execFileSync("sh", ["-c", "command -v ip"], { encoding: "utf8" }).trim();
      await mkdir(bin, { recursive: true });
      await writeFile(
        join(bin, "ip"),
        [
          "#!/bin/sh",
          "i=0",
          `while [ -e '${gate}' ] && [ $i -lt 600 ] && case "$*" in *"$(cat '${gate}' 2>/dev/null)"*) true ;; *) false ;; esac; do`,
          `  touch '${held}'; sleep 0.1; i=$((i+1))`,
          "done",
          `exec '${ip}' "$@"`,
          "",
        ].join("\n"),
      );
      await chmod(join(bin, "ip"), 0o755);
    },
    setup: (a) => {
      if (a === env.all[1]) a.env = { PATH: `${bin}:${process.env.PATH}` };
    },
  });
  afterAll(() => rm(bin, { recursive: true, force: true }));

  /** Opens the gate for host2's ip commands holding `only` (any, if empty), then SIGHUPs a swap to VNI `vni`, held. */
  const holdSwap = async (only: string, vni: number) => {
    const a2 = env.all[1];
    await rm(held, { force: true });
    await writeFile(gate, only);
    await writeFile(
      env.agents.netConfPath(a2),
      JSON.stringify({ Network: NETWORK, Backend: { Type: "vxlan", VNI: vni } }),
    );
    env.agents.reload(a2);
    await env.agents.waitFor(
      a2,
      "its swap under way",
      (s) => (s as { waitingFor?: string }).waitingFor === "swapping the backend",
      30_000,
    );
    await eventually(
      "an ip command of the swap held",
      async () => existsSync(held),
      (h) => h,
      30_000,
    );
  };

  it("subnet.env goes at once; the swap's publish, which runs before the loss's task, neither writes it nor says ready", async () => {
    const a2 = env.all[1];
    const lost = (await env.agents.status(a2)).subnet!;
    const file = env.agents.subnetFile(a2);
    const since = await env.agents.logSize(a2);
    try {
      await holdSwap("", 2);
      await giveAwayHost2sSubnet(env, since);
      // The loss's task still waits behind the swap; before, subnet.env named the lost subnet until it ran.
      expect(await coded(a2.dir, since, "AGENT_SUBNET_LOST")).toEqual([]);
      expect(existsSync(file)).toBe(false);
      await expect(agentRequest(a2.stateDir, "GET", "/readyz")).rejects.toThrow(/not ready/);
    } finally {
      await rm(gate, { force: true });
    }
    const now = await env.agents.waitFor(
      a2,
      "a new subnet, ready again",
      (s) => s.ready && s.subnet !== undefined && s.subnet !== lost,
      60_000,
    );
    // Before, the swap's publish wrote subnet.env for the lost subnet and logged "ready" ahead of
    // AGENT_SUBNET_LOST: the one "ready" now is the new subnet's.
    const order = (await logRecords(a2.dir, since)).flatMap((r) =>
      r.msg === "ready" ? ["ready"] : typeof r.code === "string" && r.code.startsWith("AGENT_SUBNET_") ? [r.code] : [],
    );
    expect(order).toEqual(["AGENT_SUBNET_LOST", "AGENT_SUBNET_REPLACED", "ready"]);
    expect(await readFile(file, "utf8")).toContain(`FLANNEL_SUBNET=${firstAddress(now.subnet!)}\n`);
  });

  it("a stop while the swap's publish is under way: the publish says ready no more", async () => {
    const a2 = env.all[1];
    const since = await env.agents.logSize(a2);
    try {
      // Only the gateway listing, which publish() runs after its check that no stop is under way.
      await holdSwap("addr show type bridge", 3);
      a2.process!.kill("SIGTERM");
      await eventually(
        "its stop begun",
        () => logRecords(a2.dir, since),
        (r) => r.some((x) => x.msg === "stopping"),
        10_000,
      );
    } finally {
      await rm(gate, { force: true });
    }
    expect(await env.agents.exited(a2)).toBe(0);
    // Before, the publish went on to set ready (/readyz answered 200 until weft.sock closed) and logged it.
    const msgs = (await logRecords(a2.dir, since)).map((r) => r.msg);
    expect(msgs.slice(msgs.indexOf("stopping"))).not.toContain("ready");
  });
});
