// The two-host topologies the dataplane benchmarks (bench:e2e, bench:profile) measure, without
// agents: kernel vxlan programmed as flannel does it, and weft's userspace dataplane in each host's
// namespace, in this process, with static peers. One pod per host; host1's is the client.
import { addVxlanPeer, createVxlanDevice } from "../../src/backends/vxlan/device.js";
import { UserspaceDataplane, type UserspaceDataplaneOptions } from "../../src/dataplane/dataplane.js";
import { withNetns } from "../../src/io/netns.js";
import { LabCluster, LAB_POD_NETWORK, type LabPod } from "../../src/lab/cluster.js";

const subnetOf = (i: number) => ({ addr: 0xc6130000 + i * 256, len: 24 });
const macOf = (i: number) => Uint8Array.from([0x0a, 0x58, 0xc6, 0x13, i, 0]);

export interface Setup {
  name: string;
  lab: LabCluster;
  client: LabPod;
  server: LabPod;
  dataplanes: UserspaceDataplane[];
}

export async function kernelVxlan(): Promise<Setup> {
  const lab = await LabCluster.create({ tag: "e2e-kvx", hosts: 2 });
  try {
    for (const [k, h] of lab.hosts.entries()) {
      await lab.addPods(h, subnetOf(k + 1), 1, 1450);
      await createVxlanDevice(h.ns.kernel, {
        vni: 1,
        dev: h.underlayIf,
        local: h.underlayAddr,
        port: 8472,
        subnet: subnetOf(k + 1),
        vtepMac: macOf(k + 1),
        mtu: 1450,
      });
    }
    for (const [k, h] of lab.hosts.entries()) {
      const peer = lab.hosts[1 - k];
      await addVxlanPeer(h.ns.kernel, 1, {
        subnet: subnetOf(2 - k),
        underlay: peer.underlayAddr,
        vtepMac: macOf(2 - k),
      });
    }
  } catch (error) {
    await lab.destroy();
    throw error;
  }
  return { name: "kernel-vxlan", lab, client: lab.hosts[0].pods[0], server: lab.hosts[1].pods[0], dataplanes: [] };
}

/** Dataplane knobs a setup sets (undefined: the dataplane's default); each one set names the setup. */
export type Knobs = Pick<
  UserspaceDataplaneOptions,
  | "busyPollUs"
  | "queueDelayUs"
  | "nice"
  | "flowQueue"
  | "tunQueueLen"
  | "udpBatching"
  | "queuesPerWorker"
  | "tunSteering"
>;

export async function userspace(
  format: "vxlan" | "udp",
  offloads: boolean,
  workers: number,
  knobs: Knobs = {},
): Promise<Setup> {
  const { busyPollUs: bp, queueDelayUs: qd, nice, flowQueue: fq, tunQueueLen: tq, udpBatching: ub } = knobs;
  const { queuesPerWorker: qw, tunSteering: ts } = knobs;
  const suffix =
    (bp === undefined ? "" : `/bp${bp}`) +
    (qd === undefined ? "" : `/qd${qd}`) +
    (nice === undefined ? "" : `/n${nice}`) +
    (fq === undefined ? "" : `/fq${fq ? "on" : "off"}`) +
    (tq === undefined ? "" : `/tq${tq}`) +
    (ub === undefined ? "" : `/ub${ub ? "on" : "off"}`) +
    (qw === undefined ? "" : `/q${qw}`) +
    (ts === undefined ? "" : `/ts${ts ? "on" : "off"}`);
  const name = `${format === "vxlan" ? "wasm-vxlan" : "udp"}/${offloads ? "on" : "off"}/w${workers}${suffix}`;
  const lab = await LabCluster.create({
    tag: `e2e-${format[0]}${offloads ? "o" : "n"}${workers}${suffix.replace(/[^a-z0-9]/g, "").slice(0, 12)}`,
    hosts: 2,
  });
  const port = format === "vxlan" ? 8472 : 8285;
  const mtu = format === "vxlan" ? 1450 : 1472;
  const dataplanes: UserspaceDataplane[] = [];
  try {
    for (const [k, h] of lab.hosts.entries()) {
      await lab.addPods(h, subnetOf(k + 1), 1, mtu);
      const dp = withNetns(
        h.ns.name,
        () =>
          new UserspaceDataplane({
            format,
            tunName: "weft0",
            mtu,
            network: LAB_POD_NETWORK,
            subnet: subnetOf(k + 1),
            listenAddr: h.underlayAddr,
            port,
            vni: 1,
            vtepMac: macOf(k + 1),
            workers,
            offloads,
            ...knobs,
          }),
      );
      dataplanes.push(dp);
      await dp.start(h.ns.kernel);
      const o = dp.counters().offload;
      if (offloads && !o.enabled) console.log(`${name}: offloads unavailable (${o.reason}); measuring without`);
      const t = dp.counters().tunSteering;
      if (ts !== false && t.by === "flow-table")
        console.log(`${name}: TUN steering program refused (${t.reason}); the device keeps its flow table`);
    }
  } catch (error) {
    await destroySetup({ name, lab, client: lab.hosts[0].pods[0], server: lab.hosts[1].pods[0], dataplanes });
    throw error;
  }
  for (const [k, dp] of dataplanes.entries()) {
    const peer = lab.hosts[1 - k];
    dp.setPeer({ name: peer.name, subnet: subnetOf(2 - k), underlay: peer.underlayAddr, port, vtepMac: macOf(2 - k) });
  }
  return { name, lab, client: lab.hosts[0].pods[0], server: lab.hosts[1].pods[0], dataplanes };
}

/** Stops the setup's dataplanes and removes its namespaces, all of them even when one fails. */
export async function destroySetup(s: Setup): Promise<void> {
  const stopped = await Promise.allSettled(s.dataplanes.map((dp) => dp.stop()));
  await s.lab.destroy();
  const failed = stopped.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}
