// Kernel programming benchmark (node dist/bench/kernel/program.js): how long the vxlan backend
// takes to program 1,000 peers (neighbour + FDB entry + route each, target under 2 s), to
// reconcile them with and without drift, and to remove them; and, for comparison, peers set one
// at a time (each awaited, as a slow trickle of membership events would). Needs root: everything
// happens in a network namespace made here and removed afterwards, also on failure. The peers'
// underlay addresses only appear in FDB entries: no packet is sent.
import { Command } from "commander";
import { pino } from "pino";
import type { Backend, BackendAnnouncement, BackendPeer } from "../../src/backends/backend.js";
import { createBackend } from "../../src/backends/index.js";
import { median } from "../../src/bench/stats.js";
import { makeTempDir, removeTempDir } from "../../src/lab/temp-dirs.js";
import { Netns } from "../../src/lab/netns.js";
import type { Ipv4Prefix } from "../../src/net/ipv4.js";
import { formatAnyPrefix } from "../../src/net/ip.js";

// No options; parsed all the same, so that --help says what this measures and a stray argument is
// refused rather than ignored.
new Command("bench:kernel")
  .description("how long the vxlan backend takes to program, reconcile and remove 1,000 peers (root)")
  .parse();

const PEERS = 1000;
const RUNS = 5;
const ONE_BY_ONE = 100;
const DRIFTED = 100;
/** 198.19.0.0/16 cut into /27s: this host has the first, the peers the ones after it. */
const NETWORK: Ipv4Prefix = { addr: 0xc6130000, len: 16 };
const subnet = (i: number): Ipv4Prefix => ({ addr: NETWORK.addr + i * 32, len: 27 });
const UNDERLAY = 0xc612000b; // 198.18.0.11

function peers(count: number, offset = 0): BackendPeer[] {
  return Array.from({ length: count }, (_, k) => {
    const i = k + offset + 1;
    const vtep: BackendAnnouncement = {
      type: "vxlan",
      vni: 1,
      port: 8472,
      vtepMac: `0a:58:00:00:${(i >> 8).toString(16).padStart(2, "0")}:${(i & 255).toString(16).padStart(2, "0")}`,
    };
    return { name: `peer${i}`, subnet: subnet(i), underlay: 0xc6120000 + 20 + (i % 200), backend: vtep };
  });
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function count(ns: Netns): Promise<{ routes: number; neighs: number; fdbs: number }> {
  const routes = await ns.kernel.ipJson<unknown[]>(["route", "show", "dev", "flannel.1"]);
  const neighs = await ns.kernel.ipJson<unknown[]>(["neigh", "show", "dev", "flannel.1"]);
  const fdbs = (await ns.kernel.bridgeJson<Array<{ dst?: string }>>(["fdb", "show", "dev", "flannel.1"])).filter(
    (f) => f.dst,
  );
  return { routes: routes.length, neighs: neighs.length, fdbs: fdbs.length };
}

async function measure(ns: Netns, backend: Backend): Promise<Record<string, number>> {
  const all = peers(PEERS);
  const program: number[] = [];
  const reconcileClean: number[] = [];
  const reconcileDrift: number[] = [];
  const remove: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    program.push(await timed(() => Promise.all(all.map((p) => backend.setPeer(p)))));
    const c = await count(ns);
    if (c.routes !== PEERS || c.neighs !== PEERS || c.fdbs !== PEERS)
      throw new Error(`programmed ${JSON.stringify(c)}, expected ${PEERS} of each`);
    reconcileClean.push(await timed(() => backend.reconcile()));
    await ns.kernel.ipBatch(all.slice(0, DRIFTED).map((p) => `route del ${formatAnyPrefix(p.subnet)} dev flannel.1`));
    const before = backend.counters().driftRepairs;
    reconcileDrift.push(await timed(() => backend.reconcile()));
    if (backend.counters().driftRepairs - before !== DRIFTED)
      throw new Error("reconcile did not repair every deleted route");
    remove.push(await timed(() => Promise.all(all.map((p) => backend.removePeer(p.name)))));
    const left = await count(ns);
    if (left.routes + left.neighs + left.fdbs !== 0) throw new Error(`left behind ${JSON.stringify(left)}`);
  }
  const trickle = peers(ONE_BY_ONE, PEERS);
  const oneByOne = await timed(async () => {
    for (const p of trickle) await backend.setPeer(p);
  });
  return {
    programMs: median(program),
    programWorstMs: Math.max(...program),
    reconcileCleanMs: median(reconcileClean),
    reconcileDriftMs: median(reconcileDrift),
    removeMs: median(remove),
    oneByOneMsPerPeer: oneByOne / ONE_BY_ONE,
  };
}

if (process.getuid?.() !== 0) {
  console.error(
    "bench:kernel needs root and iproute2: it programs a vxlan device inside a network namespace it creates",
  );
  process.exit(1);
}
const ns = await Netns.create("kbench");
const stateDir = makeTempDir("weft-kbench-");
try {
  // A veth pair inside the namespace stands in for the underlay (both ends up, so it has carrier).
  await ns.kernel.ipBatch([
    "link add eth0 index 20 type veth peer name wire0",
    "addr add 198.18.0.11/24 dev eth0",
    "link set eth0 up",
    "link set wire0 up",
  ]);
  const backend = createBackend(
    "vxlan",
    {},
    {
      kernel: ns.kernel,
      network: NETWORK,
      subnet: subnet(0),
      underlay: { iface: "eth0", ifindex: 20, addr: UNDERLAY, mtu: 1500 },
      stateDir,
      logger: pino({ level: "silent" }),
    },
  );
  await backend.start();
  const r = await measure(ns, backend);
  await backend.stop(false);
  const c = backend.counters();
  console.log(
    `weft kernel programming benchmark: vxlan backend, ${PEERS} peers (neighbour + FDB entry + route each), median of ${RUNS} runs\n`,
  );
  console.log("| operation | time |");
  console.log("|---|---:|");
  console.log(
    `| program ${PEERS} peers (setPeer for all at once) | ${r.programMs.toFixed(0)} ms (worst ${r.programWorstMs.toFixed(0)} ms; target < 2000 ms) |`,
  );
  console.log(`| reconcile ${PEERS} peers, nothing drifted | ${r.reconcileCleanMs.toFixed(0)} ms |`);
  console.log(`| reconcile ${PEERS} peers, ${DRIFTED} routes deleted by hand | ${r.reconcileDriftMs.toFixed(0)} ms |`);
  console.log(`| remove ${PEERS} peers | ${r.removeMs.toFixed(0)} ms |`);
  console.log(
    `| setPeer one at a time, each awaited (${ONE_BY_ONE} peers) | ${r.oneByOneMsPerPeer.toFixed(1)} ms per peer |`,
  );
  console.log(`\nkernel commands ${c.kernelCommands}, refused ${c.kernelErrors}`);
  console.log(
    JSON.stringify({ peers: PEERS, runs: RUNS, ...r, kernelCommands: c.kernelCommands, kernelErrors: c.kernelErrors }),
  );
} finally {
  removeTempDir(stateDir);
  await ns.destroy();
}
