// CNI ADD/DEL latency (sudo npm run bench:cni): how long a container runtime waits for a pod's
// network, measured as the runtime sees it — spawn, config on stdin, result on stdout — for
// weft's conflist (weft cni → bridge + host-local, then portmap), and, to show what weft cni adds,
// for the same bridge config run directly. Pods one after another (p50/p99 over --pods), then a
// burst of --burst pods at once (wall time). One host namespace from the lab, removed afterwards.
import { join } from "node:path";
import { Command } from "commander";
import { writeSubnetEnv } from "../../src/agent/subnet-env.js";
import { percentile } from "../../src/bench/stats.js";
import { delegateConfig } from "../../src/cni/plugin.js";
import { parseNetConf, parseSubnetEnvFile } from "../../src/cni/config.js";
import { CniRuntime, type ConfList } from "../../src/cni/runtime.js";
import { LabCluster, LAB_POD_NETWORK, labConfList, referencePluginDirs } from "../../src/lab/cluster.js";
import { Netns } from "../../src/lab/netns.js";
import { readFile } from "node:fs/promises";
import { wholeNumber } from "../cli-options.js";

const program = new Command("bench:cni")
  .description(
    "CNI ADD/DEL latency as a container runtime sees it: weft's conflist against the bridge plugin run directly (root)",
  )
  .option("--pods <n>", "pods one after another (p50/p99 over them)", wholeNumber(1), 100)
  .option("--burst <n>", "pods at once (wall time)", wholeNumber(1), 20)
  .parse();
const { pods: PODS, burst: BURST } = program.opts<{ pods: number; burst: number }>();

const ms = (x: number) => `${x.toFixed(1)} ms`;

async function series(rt: CniRuntime, tag: string): Promise<{ add: number[]; del: number[] }> {
  const add: number[] = [];
  const del: number[] = [];
  for (let i = 0; i < PODS; i++) {
    const ns = await Netns.create(`bcni-${tag}`);
    const att = { containerId: ns.name, netns: ns.path, ifName: "eth0" };
    let t = performance.now();
    const result = await rt.add(att);
    add.push(performance.now() - t);
    t = performance.now();
    await rt.del(att, result);
    del.push(performance.now() - t);
    await ns.destroy();
  }
  return { add, del };
}

async function burst(rt: CniRuntime, tag: string): Promise<{ add: number; del: number }> {
  const nss = await Promise.all(Array.from({ length: BURST }, () => Netns.create(`bcni-${tag}`)));
  const atts = nss.map((ns) => ({ containerId: ns.name, netns: ns.path, ifName: "eth0" }));
  let t = performance.now();
  const results = await Promise.all(atts.map((a) => rt.add(a)));
  const add = performance.now() - t;
  t = performance.now();
  await Promise.all(atts.map((a, i) => rt.del(a, results[i])));
  const del = performance.now() - t;
  await Promise.all(nss.map((ns) => ns.destroy()));
  return { add, del };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("needs root: it builds network namespaces (sudo npm run bench:cni)");
  const lab = await LabCluster.create({ tag: "bcni", hosts: 1 });
  try {
    const host = lab.hosts[0];
    const subnetFile = join(lab.hostDir(host), "subnet.env");
    await writeSubnetEnv(subnetFile, {
      v4: { network: LAB_POD_NETWORK, subnet: { addr: 0xc6130900, len: 24 } },
      mtu: 1450,
      ipMasq: false,
    });
    const weft = lab.cni(host, subnetFile);
    // The same bridge + host-local config weft cni hands over, run by the runtime directly.
    const list = labConfList(lab.hostDir(host), subnetFile);
    const bridge = delegateConfig(
      parseNetConf(JSON.stringify({ ...list.plugins[0], name: list.name, cniVersion: list.cniVersion })),
      parseSubnetEnvFile(await readFile(subnetFile, "utf8"), subnetFile),
    );
    const direct = new CniRuntime(
      { name: list.name, cniVersion: list.cniVersion, plugins: [bridge as ConfList["plugins"][number]] },
      referencePluginDirs(),
      host.ns.wrap([]),
    );
    await series(weft, "w"); // warm-up: cni0, page cache
    const rows: string[] = [];
    for (const [name, rt, tag] of [
      ["weft conflist (weft cni → bridge + host-local, portmap)", weft, "w"],
      ["bridge + host-local directly", direct, "d"],
    ] as const) {
      const s = await series(rt, tag);
      const b = await burst(rt, tag);
      rows.push(
        `| ${name} | ${ms(percentile(s.add, 0.5))} | ${ms(percentile(s.add, 0.99))} | ${ms(percentile(s.del, 0.5))} | ${ms(percentile(s.del, 0.99))} | ${ms(b.add)} | ${ms(b.del)} |`,
      );
    }
    process.stdout.write(
      [
        `CNI latency, ${PODS} pods one after another (p50/p99), then ${BURST} at once (wall time); plugins run in the host namespace via ip netns exec`,
        "",
        `| runtime → plugins | ADD p50 | ADD p99 | DEL p50 | DEL p99 | ${BURST} ADDs at once | ${BURST} DELs at once |`,
        "|---|---|---|---|---|---|---|",
        ...rows,
        "",
      ].join("\n"),
    );
  } finally {
    await lab.destroy();
  }
}

await main();
