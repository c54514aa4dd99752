// weft cni run the way a container runtime runs it (CNI_* environment, config on stdin, result on
// stdout), delegating to the real reference plugins from Debian's containernetworking-plugins
// (bridge, host-local, portmap), on lab hosts in network namespaces without agents: each host's
// subnet.env is written as an agent writes it.
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeSubnetEnv } from "../../src/agent/subnet-env.js";
import { parseNetConf, parseSubnetEnvFile } from "../../src/cni/config.js";
import { CniError } from "../../src/cni/errors.js";
import { execPlugin } from "../../src/cni/exec.js";
import { delegateConfig } from "../../src/cni/plugin.js";
import type { Attachment, CniResult } from "../../src/cni/runtime.js";
import {
  LabCluster,
  LAB_POD_NETWORK,
  LAB_POD_NETWORK6,
  labConfList,
  referencePluginDirs,
  type LabHost,
  type LabPod,
} from "../../src/lab/cluster.js";
import { Netns } from "../../src/lab/netns.js";
import { formatIpv4, prefixContains, type Ipv4Prefix } from "../../src/net/ipv4.js";
import { parsePrefix6 } from "../../src/net/ipv6.js";
import { eventually } from "../agent/support.js";
import { canUseNetns } from "../support/netns.js";
import { ageKept } from "./kept-age.js";

const S1: Ipv4Prefix = { addr: 0xc6130500, len: 24 }; // 198.19.5.0/24
const S2: Ipv4Prefix = { addr: 0xc6130600, len: 24 }; // 198.19.6.0/24

describe.skipIf(!canUseNetns())("weft cni with the reference plugins", () => {
  let lab: LabCluster;
  let h1: LabHost;
  let h2: LabHost;
  const subnetFile = (h: LabHost) => join(lab.hostDir(h), "subnet.env");
  const hostVeths = async (h: LabHost) =>
    (await h.ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show", "type", "veth"]))
      .map((l) => l.ifname)
      .filter((n) => n !== h.underlayIf);
  const ipamStore = async (h: LabHost) =>
    (await readdir(join(lab.hostDir(h), "ipam", "cbr0")).catch(() => [] as string[])).sort();
  const kept = async (h: LabHost) => await readdir(join(lab.hostDir(h), "flannel")).catch(() => [] as string[]);
  const natRules = async (h: LabHost, family: 4 | 6 = 4) => (await h.ns.kernel.iptablesRules(family, "nat")) ?? [];
  /** The bridge plugin's POSTROUTING jumps for a container (found by their comment, as it wrote them). */
  const masqJumps = (rules: string[], cid: string) =>
    rules.filter((l) => l.startsWith("-A POSTROUTING ") && l.includes(`--comment "name: \\"cbr0\\" id: \\"${cid}\\""`));
  /**
   * Runs the flannel plugin alone in the host, as the runtime would, with a config of our making.
   * A GC's kept files are first made older than its grace (see ageKept), as a gone pod's are;
   * `gcFresh` leaves them as they are.
   */
  const runFlannel = async (
    h: LabHost,
    command: "ADD" | "DEL" | "CHECK" | "VERSION" | "STATUS" | "GC",
    conf: object,
    att?: Partial<Attachment>,
    env?: NodeJS.ProcessEnv,
    gcFresh = false,
  ) => {
    if (command === "GC" && !gcFresh) await ageKept(join(lab.hostDir(h), "flannel"));
    return await execPlugin(
      "flannel",
      conf,
      {
        command,
        containerId: att?.containerId,
        netns: att?.netns,
        ifName: att?.ifName ?? "eth0",
        path: [join(lab.workDir, "bin"), ...referencePluginDirs()],
      },
      { wrap: h.ns.wrap([]), env },
    );
  };
  /**
   * A PATH for the plugin (only its process, nothing shadowed for anyone else) whose iptables,
   * ip6tables and their -restore log each run to `log` before running the real one, or, for the
   * names in `failing`, fail as a held lock (or with `why`) would.
   */
  const iptablesPath = async (
    log: string,
    failing: string[] = [],
    why = "Another app is currently holding the xtables lock (test)",
  ) => {
    const dir = await mkdtemp(join(lab.workDir, "iptables-"));
    for (const name of ["iptables", "ip6tables", "iptables-restore", "ip6tables-restore"]) {
      const run = failing.includes(name)
        ? // Only -restore reads a script: a listing's stdin is never closed.
          `${name.endsWith("-restore") ? "cat >/dev/null; " : ""}echo "${name}: ${why}" >&2; exit 4`
        : `exec /usr/sbin/${name} "$@"`;
      await writeFile(join(dir, name), `#!/bin/sh\necho "${name} $*" >> ${log}\n${run}\n`, { mode: 0o755 });
    }
    return { ...process.env, PATH: `${dir}:${process.env.PATH}` };
  };
  /**
   * A PATH for the plugin whose `nft` fails as one without JSON support does (as one before 0.9,
   * or without nf_tables, would), logging each run to `log`; `wrap` runs the plugin in h1 with its
   * stderr appended to `log` too.
   */
  const unusableNft = async () => {
    const dir = await mkdtemp(join(lab.workDir, "nft-"));
    const log = join(dir, "log");
    await writeFile(
      join(dir, "nft"),
      `#!/bin/sh\necho "nft $*" >> ${log}\necho "Error: JSON support not compiled-in" >&2\nexit 1\n`,
      { mode: 0o755 },
    );
    return {
      env: { ...process.env, PATH: `${dir}:${process.env.PATH}` },
      log,
      wrap: h1.ns.wrap(["sh", "-c", `"$@" 2>>${log}`, "sh"]),
    };
  };
  /**
   * The bridge's nftables masquerade rules from 1.6 (pkg/ip's ipmasq_nftables_linux.go), which
   * Debian's bridge (1.1.1) does not write (it ignores ipMasqBackend and uses iptables): table inet
   * cni_plugins_masquerade, chain masq_checks, one rule per address, its comment the hash of
   * (network, interface, container) then a description. The test writes them in h1 itself.
   */
  const nftMasq = {
    comment: (net: string, ifName: string, cid: string) => {
      const sha = (t: string) => createHash("sha512").update(t).digest("hex").slice(0, 16);
      return `${sha(net)}-${sha(`${ifName}:${cid}`)}, net: ${net}, if: ${ifName}, id: ${cid}`;
    },
    /** Writes the table with a rule per [address, comment]. */
    write: async (rules: Array<[string, string]>) =>
      await h1.ns.kernel.nft(
        [
          "add table inet cni_plugins_masquerade",
          "add chain inet cni_plugins_masquerade masq_checks",
          "add chain inet cni_plugins_masquerade postrouting { type nat hook postrouting priority srcnat; }",
          "add rule inet cni_plugins_masquerade postrouting goto masq_checks",
          ...rules.map(
            ([addr, c]) =>
              `add rule inet cni_plugins_masquerade masq_checks ip saddr == ${addr} ip daddr != 198.19.5.0/24 masquerade comment "${c}"`,
          ),
          "",
        ].join("\n"),
      ),
    /** The comments of the rules there, sorted. */
    comments: async () => {
      const j = await h1.ns.kernel.nftJson<{ nftables: Array<{ rule?: { comment?: string } }> }>([
        "chain",
        "inet",
        "cni_plugins_masquerade",
        "masq_checks",
      ]);
      return j.nftables.flatMap((e) => (e.rule?.comment ? [e.rule.comment] : [])).sort();
    },
    remove: async () => await h1.ns.kernel.nft("delete table inet cni_plugins_masquerade\n").catch(() => undefined),
  };
  /** A subnet.env of h1's, with an IPv6 subnet too when `dual`. */
  const subnetFileOf = async (name: string, dual: boolean) => {
    const file = join(lab.hostDir(h1), name);
    const v6 = "FLANNEL_IPV6_NETWORK=2001:2:0:8000::/49\nFLANNEL_IPV6_SUBNET=2001:2:0:8005::1/64\n";
    await writeFile(file, `${await readFile(subnetFile(h1), "utf8")}${dual ? v6 : ""}`);
    return file;
  };
  /** IPv4 alone, and both families, for it.each. */
  const FAMILY_CASES = [
    ["IPv4", false],
    ["dual-stack (ip6tables too)", true],
  ] as const;
  /** A config of h1's with the bridge's ipMasq (FLANNEL_IPMASQ=false), both families when `dual`; its families. */
  const masqConfOf = async (name: string, dual: boolean) => {
    const file = await subnetFileOf(name, dual);
    const families = dual ? ([4, 6] as const) : ([4] as const);
    // The lab's delegate turns ipMasq off; without it, the bridge masquerades.
    return { families, conf: flannelConf(h1, { subnetFile: file, delegate: {} }) };
  };
  /** ADD (eth0) of each pod on h1; their addresses. */
  const addPods = async (conf: object, pods: Netns[]) => {
    const addrs = new Map<Netns, string[]>();
    for (const ns of pods) {
      const r = (await runFlannel(h1, "ADD", conf, { containerId: ns.name, netns: ns.path })) as CniResult;
      addrs.set(
        ns,
        r.ips!.map((i) => i.address.split("/")[0]),
      );
    }
    return addrs;
  };
  /** ADD of a pod's eth0 and net1 on h1; their addresses, and `att` naming either. */
  const addEth0Net1 = async (conf: object, ns: Netns) => {
    const att = (ifName: string) => ({ containerId: ns.name, netns: ns.path, ifName });
    const addrOf = async (ifName: string) =>
      ((await runFlannel(h1, "ADD", conf, att(ifName))) as CniResult).ips![0].address.split("/")[0];
    return { att, eth0: await addrOf("eth0"), net1: await addrOf("net1") };
  };
  const natOf = async (families: ReadonlyArray<4 | 6>) =>
    new Map(await Promise.all(families.map(async (f) => [f, await natRules(h1, f)] as const)));
  const logged = async (log: string) => (await readFile(log, "utf8").catch(() => "")).split("\n").filter(Boolean);
  const flannelConf = (h: LabHost, extra: object = {}) => ({
    ...labConfList(lab.hostDir(h), subnetFile(h)).plugins[0],
    name: "cbr0",
    cniVersion: "1.0.0",
    ...extra,
  });

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "cni", hosts: 2 });
    [h1, h2] = lab.hosts;
    await writeSubnetEnv(subnetFile(h1), { v4: { network: LAB_POD_NETWORK, subnet: S1 }, mtu: 1400, ipMasq: false });
    await writeSubnetEnv(subnetFile(h2), { v4: { network: LAB_POD_NETWORK, subnet: S2 }, mtu: 1450, ipMasq: false });
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it("VERSION lists 0.1.0 to 1.1.0, as flannel's plugin", async () => {
    expect(await runFlannel(h1, "VERSION", { cniVersion: "0.4.0" })).toEqual({
      cniVersion: "0.4.0",
      supportedVersions: ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    });
  });

  it.each([
    ["0.3.0", (r: { ips: Array<{ address: string }> }) => r.ips[0].address],
    ["none (0.1.0 to the reference plugins)", (r: { ip4: { ip: string } }) => r.ip4.ip],
  ] as const)(
    "cniVersion %s: ADD builds the pod, in that version's result format; DEL releases it",
    async (v, addrOf) => {
      const ns = await Netns.create("cni-ver");
      try {
        const conf = flannelConf(h1, { cniVersion: v.startsWith("none") ? undefined : v });
        const att = { containerId: ns.name, netns: ns.path };
        const r = (await runFlannel(h1, "ADD", conf, att)) as never;
        const addr = addrOf(r).split("/")[0];
        expect(`${addr}/24`).toMatch(/^198\.19\.5\.\d+\/24$/);
        expect(await ipamStore(h1)).toContain(addr);
        await runFlannel(h1, "DEL", conf, att);
        expect(await ipamStore(h1)).not.toContain(addr);
        expect(await kept(h1)).not.toContain(ns.name);
      } finally {
        await ns.destroy();
      }
    },
  );

  it("cniVersion 1.1.0, which Debian's plugins (1.1.1) do not take: the delegate runs at 1.0.0 (the same result format), the result says 1.1.0, CHECK and DEL work", async () => {
    const ns = await Netns.create("cni-ver");
    try {
      const conf = flannelConf(h1, { cniVersion: "1.1.0" });
      const att = { containerId: ns.name, netns: ns.path };
      const r = (await runFlannel(h1, "ADD", conf, att)) as CniResult;
      expect(r.cniVersion).toBe("1.1.0");
      const addr = r.ips![0].address.split("/")[0];
      expect(addr).toMatch(/^198\.19\.5\.\d+$/);
      expect(JSON.parse(await readFile(join(lab.hostDir(h1), "flannel", ns.name), "utf8"))).toMatchObject({
        cniVersion: "1.0.0",
        "weft.ifName": "eth0",
      });
      expect(await runFlannel(h1, "CHECK", { ...conf, prevResult: r }, att)).toBeUndefined();
      await runFlannel(h1, "DEL", { ...conf, prevResult: r }, att);
      expect(await ipamStore(h1)).not.toContain(addr);
      expect(
        await ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"]).then((l) => l.map((x) => x.ifname)),
      ).toEqual(["lo"]);
      expect(await kept(h1)).not.toContain(ns.name);
    } finally {
      await ns.destroy();
    }
  });

  it("STATUS (1.1.0) succeeds while subnet.env is there; without it, or malformed, it is 'not available' (50); before 1.1.0 it is an incompatible version (1)", async () => {
    // Debian's bridge has no STATUS (it answers "missing containerID", 3): it is not asked.
    expect(await runFlannel(h1, "STATUS", flannelConf(h1, { cniVersion: "1.1.0" }))).toBeUndefined();
    const missing = join(lab.hostDir(h1), "no-subnet.env");
    const e = await runFlannel(h1, "STATUS", flannelConf(h1, { cniVersion: "1.1.0", subnetFile: missing })).catch(
      (x: unknown) => x,
    );
    expect(e).toMatchObject({
      cniCode: 50,
      code: "CNI_NOT_AVAILABLE",
      message: expect.stringMatching(/does not exist yet/),
    });
    const bad = join(lab.hostDir(h1), "bad-status-subnet.env");
    await writeFile(bad, "FLANNEL_NETWORK=198.19.0.0/16\n");
    await expect(
      runFlannel(h1, "STATUS", flannelConf(h1, { cniVersion: "1.1.0", subnetFile: bad })),
    ).rejects.toMatchObject({
      cniCode: 50,
      message: expect.stringMatching(/is malformed/),
    });
    // Unreadable (here a directory): the details say what subnetFile must name. Before, Node's text alone.
    const dir = lab.hostDir(h1);
    await expect(
      runFlannel(h1, "STATUS", flannelConf(h1, { cniVersion: "1.1.0", subnetFile: dir })),
    ).rejects.toMatchObject({
      cniCode: 50,
      message: expect.stringMatching(/cannot read subnet file .*EISDIR/),
      details: `subnetFile in the network config (the conflist) is ${dir}: it must name the file the agent writes, its --subnet-file (default /run/flannel/subnet.env)`,
    });
    await expect(runFlannel(h1, "STATUS", flannelConf(h1, { cniVersion: "1.0.0" }))).rejects.toMatchObject({
      cniCode: 1,
    });
    await expect(
      runFlannel(h1, "GC", flannelConf(h1, { cniVersion: "1.0.0", "cni.dev/valid-attachments": [] })),
    ).rejects.toMatchObject({ cniCode: 1 });
  });

  it("GC (1.1.0) runs the delegate's DEL for an attachment the runtime no longer lists (its address released, its kept config gone) and keeps the listed ones", async () => {
    const conf = flannelConf(h1, { cniVersion: "1.1.0" });
    const [gone, live] = [await Netns.create("cni-gc"), await Netns.create("cni-gc")];
    try {
      const addrOf = async (ns: Netns) =>
        (
          (await runFlannel(h1, "ADD", conf, { containerId: ns.name, netns: ns.path })) as CniResult
        ).ips![0].address.split("/")[0];
      const [goneAddr, liveAddr] = [await addrOf(gone), await addrOf(live)];
      const veths = await hostVeths(h1);
      // The runtime lost this pod without a DEL (a crash): its namespace, so its veth, went away.
      // The kernel removes a destroyed namespace's devices a moment later, from a workqueue.
      await gone.destroy();
      await eventually(
        "the gone pod's veth removed",
        () => hostVeths(h1),
        (v) => v.length === veths.length - 1,
      );
      expect(await ipamStore(h1)).toContain(goneAddr);
      const valid = { "cni.dev/valid-attachments": [{ containerID: live.name, ifname: "eth0" }] };
      expect(await runFlannel(h1, "GC", { ...conf, ...valid })).toBeUndefined();
      expect(await ipamStore(h1)).not.toContain(goneAddr);
      expect(await kept(h1)).not.toContain(gone.name);
      expect(await ipamStore(h1)).toContain(liveAddr);
      expect(await kept(h1)).toContain(live.name);
      expect(
        await live.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"]).then((l) => l.map((x) => x.ifname)),
      ).toContain("eth0");
      await runFlannel(h1, "DEL", conf, { containerId: live.name, netns: live.path });
      expect(await ipamStore(h1)).not.toContain(liveAddr);
    } finally {
      await gone.destroy();
      await live.destroy();
    }
  });

  it("GC removes the NAT chain and POSTROUTING jump the bridge plugin made for an unlisted pod's ipMasq (FLANNEL_IPMASQ=false), which its DEL without the namespace leaves; other pods' stay; a chain already gone is no failure", async () => {
    // The lab's delegate turns ipMasq off; without it, FLANNEL_IPMASQ=false hands masquerading to the bridge.
    const conf = flannelConf(h1, { cniVersion: "1.1.0", delegate: {} });
    const pods = [await Netns.create("cni-gcmasq"), await Netns.create("cni-gcmasq"), await Netns.create("cni-gcmasq")];
    const [gone, live, bare] = pods;
    try {
      for (const ns of pods) await runFlannel(h1, "ADD", conf, { containerId: ns.name, netns: ns.path });
      const before = await natRules(h1);
      const chainOf = (ns: Netns) => masqJumps(before, ns.name)[0]?.split(" -j ")[1] ?? "";
      const [goneChain, liveChain, bareChain] = pods.map(chainOf);
      for (const [ns, chain] of [
        [gone, goneChain],
        [live, liveChain],
        [bare, bareChain],
      ] as const) {
        expect(chain).toMatch(/^CNI-[0-9a-f]{24}$/);
        expect(masqJumps(before, ns.name)).toHaveLength(1);
        expect(before).toContain(`-N ${chain}`);
        expect(before.filter((l) => l.startsWith(`-A ${chain} `))).toHaveLength(2); // ACCEPT to the subnet, MASQUERADE
      }
      // bare's chain is gone already (as after a DEL with its namespace that then failed on something else).
      await h1.ns.kernel.iptablesRestore(
        4,
        `*nat\n-D${masqJumps(before, bare.name)[0].slice(2)}\n-F ${bareChain}\n-X ${bareChain}\nCOMMIT\n`,
      );
      // The runtime lost gone and bare without a DEL: their namespaces went.
      await gone.destroy();
      await bare.destroy();
      const valid = { "cni.dev/valid-attachments": [{ containerID: live.name, ifname: "eth0" }] };
      expect(await runFlannel(h1, "GC", { ...conf, ...valid })).toBeUndefined();
      const after = await natRules(h1);
      expect(after.filter((l) => l.includes(goneChain) || l.includes(gone.name))).toEqual([]);
      expect(after.filter((l) => l.includes(bareChain) || l.includes(bare.name))).toEqual([]);
      expect(after.filter((l) => l.includes(liveChain))).toEqual(before.filter((l) => l.includes(liveChain)));
      expect(await kept(h1)).not.toContain(gone.name);
      expect(await kept(h1)).not.toContain(bare.name);
      expect(await runFlannel(h1, "GC", { ...conf, ...valid })).toBeUndefined();
      // live's own DEL, with its namespace, still finds its chain to remove.
      expect(await runFlannel(h1, "DEL", conf, { containerId: live.name, netns: live.path })).toBeUndefined();
      expect((await natRules(h1)).filter((l) => l.includes(liveChain))).toEqual([]);
    } finally {
      for (const ns of pods) await ns.destroy();
    }
  });

  it("GC frees the addresses even when iptables fails (a held xtables lock), keeping only the masquerade removal for the next GC; nat is listed once per family and changed in one iptables-restore for all pods (one per pod only after that failed)", async () => {
    const file = await subnetFileOf("gcfail-subnet.env", true);
    const conf = flannelConf(h1, { cniVersion: "1.1.0", subnetFile: file, delegate: {} }); // the bridge's ipMasq
    const pods: Netns[] = [];
    for (let i = 0; i < 4; i++) pods.push(await Netns.create("cni-gcfail"));
    const [live, ...gone] = pods;
    try {
      const addrs = await addPods(conf, pods);
      const before = await natOf([4, 6]);
      const chainOf = (ns: Netns) => masqJumps(before.get(4)!, ns.name)[0]?.split(" -j ")[1] ?? "";
      for (const ns of pods) expect(addrs.get(ns)).toHaveLength(2);
      for (const ns of pods) for (const f of [4, 6] as const) expect(before.get(f)).toContain(`-N ${chainOf(ns)}`);
      // A rule of someone else's whose comment names a gone pod's chain is not a jump to it.
      const note = ["-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", `see -j ${chainOf(gone[0])} x`];
      await h1.ns.exec(["iptables", ...note, "-j", "RETURN"]);
      // The runtime lost three pods without a DEL (their namespaces went, as after a reboot).
      for (const ns of gone) await ns.destroy();
      const valid = { "cni.dev/valid-attachments": [{ containerID: live.name, ifname: "eth0" }] };
      const log = join(lab.workDir, `${live.name}.iptables.log`);
      await expect(
        runFlannel(
          h1,
          "GC",
          { ...conf, ...valid },
          undefined,
          await iptablesPath(log, ["iptables-restore"], "line 2 failed"),
        ),
      ).rejects.toMatchObject({ cniCode: 5, message: expect.stringContaining("line 2 failed") });
      const counts = (lines: string[]) =>
        Object.fromEntries(
          ["iptables", "iptables-restore", "ip6tables", "ip6tables-restore"].map((t) => [
            t,
            lines.filter((l) => l.split(" ")[0] === t).length,
          ]),
        );
      for (const ns of gone) {
        // The delegate's DEL ran all the same: the addresses are free.
        for (const a of addrs.get(ns)!) expect(await ipamStore(h1)).not.toContain(a);
        expect(await kept(h1)).toContain(ns.name);
        expect(await natRules(h1)).toContain(`-N ${chainOf(ns)}`);
        expect((await natRules(h1, 6)).filter((l) => l.includes(chainOf(ns)))).toEqual([]);
      }
      // One listing and one transaction per family; IPv4's failed, so one more per pod.
      expect(counts(await logged(log))).toEqual({
        iptables: 1,
        "iptables-restore": 4,
        ip6tables: 1,
        "ip6tables-restore": 1,
      });
      // A held lock fails all at once: a retry per chain would wait as long again (-w) for each.
      await rm(log);
      await expect(
        runFlannel(h1, "GC", { ...conf, ...valid }, undefined, await iptablesPath(log, ["iptables-restore"])),
      ).rejects.toMatchObject({ cniCode: 5, message: expect.stringContaining("xtables lock") });
      expect(counts(await logged(log))["iptables-restore"]).toBe(1);
      await rm(log);
      expect(await runFlannel(h1, "GC", { ...conf, ...valid }, undefined, await iptablesPath(log))).toBeUndefined();
      // Only IPv4 had rules left to remove: one transaction for the three pods.
      expect(counts(await logged(log))).toEqual({
        iptables: 1,
        "iptables-restore": 1,
        ip6tables: 1,
        "ip6tables-restore": 0,
      });
      expect((await natRules(h1)).filter((l) => l.includes('"see -j '))).toHaveLength(1);
      await h1.ns.exec(["iptables", ...note.map((a) => (a === "-A" ? "-D" : a)), "-j", "RETURN"]);
      for (const f of [4, 6] as const) {
        const after = await natRules(h1, f);
        for (const ns of gone) expect(after.filter((l) => l.includes(chainOf(ns)) || l.includes(ns.name))).toEqual([]);
        expect(after.filter((l) => l.includes(chainOf(live)))).toEqual(
          before.get(f)!.filter((l) => l.includes(chainOf(live))),
        );
      }
      for (const ns of gone) expect(await kept(h1)).not.toContain(ns.name);
      // Nothing left: a GC then lists nat and changes nothing.
      await rm(log);
      expect(await runFlannel(h1, "GC", { ...conf, ...valid }, undefined, await iptablesPath(log))).toBeUndefined();
      expect(await logged(log)).toEqual([]);
      expect(await runFlannel(h1, "DEL", conf, { containerId: live.name, netns: live.path })).toBeUndefined();
    } finally {
      for (const ns of pods) await ns.destroy();
    }
  });

  it.each(["1.1.0", "1.0.0"])(
    "DEL (%s) without the namespace frees the address even when iptables fails, and fails (a failed DEL's retry is the one every runtime makes: containerd runs no GC), keeping the rules for the next DEL or GC, which removes only those",
    async (cniVersion) => {
      const conf = flannelConf(h1, { cniVersion, delegate: {} }); // the bridge's ipMasq
      const ns = await Netns.create("cni-delfail");
      try {
        const r = (await runFlannel(h1, "ADD", conf, { containerId: ns.name, netns: ns.path })) as CniResult;
        const addr = r.ips![0].address.split("/")[0];
        const chain = masqJumps(await natRules(h1), ns.name)[0].split(" -j ")[1];
        await ns.destroy();
        const log = join(lab.workDir, `${ns.name}.iptables.log`);
        const del = runFlannel(
          h1,
          "DEL",
          conf,
          { containerId: ns.name },
          await iptablesPath(log, ["iptables-restore"]),
        );
        await expect(del).rejects.toMatchObject({ cniCode: 5 });
        expect(await ipamStore(h1)).not.toContain(addr);
        expect(await kept(h1)).toContain(ns.name);
        expect(await natRules(h1)).toContain(`-N ${chain}`);
        expect(await runFlannel(h1, "DEL", conf, { containerId: ns.name })).toBeUndefined();
        expect((await natRules(h1)).filter((l) => l.includes(chain) || l.includes(ns.name))).toEqual([]);
        expect(await kept(h1)).not.toContain(ns.name);
      } finally {
        await ns.destroy();
      }
    },
  );

  it("GC takes the runtime's list, not the kept files, for whether a pod's other interface still uses the chain: with eth0's kept file damaged, net1's GC leaves eth0's jump", async () => {
    const conf = flannelConf(h1, { cniVersion: "1.1.0", delegate: {} }); // the bridge's ipMasq
    const ns = await Netns.create("cni-gcdmg");
    try {
      const { att, eth0, net1 } = await addEth0Net1(conf, ns);
      const jumps = masqJumps(await natRules(h1), ns.name);
      expect(jumps).toHaveLength(2);
      const eth0File = join(lab.hostDir(h1), "flannel", ns.name);
      const text = await readFile(eth0File, "utf8");
      await writeFile(eth0File, "{");
      const valid = { "cni.dev/valid-attachments": [{ containerID: ns.name, ifname: "eth0" }] };
      expect(await runFlannel(h1, "GC", { ...conf, ...valid })).toBeUndefined();
      expect(await ipamStore(h1)).not.toContain(net1);
      expect(masqJumps(await natRules(h1), ns.name)).toEqual(jumps.filter((l) => l.includes(`-s ${eth0}/32 `)));
      await writeFile(eth0File, text);
      expect(await runFlannel(h1, "DEL", conf, att("eth0"))).toBeUndefined();
      expect((await natRules(h1)).filter((l) => l.includes(jumps[0].split(" -j ")[1]))).toEqual([]);
    } finally {
      await ns.destroy();
    }
  });

  it("a pod's two interfaces with an IPAM that keeps no store (static): net1's GC cannot tell its jump and leaves it; eth0's DEL, the container's last on the network, removes it with the chain instead of failing on it", async () => {
    const conf = (address: string) =>
      flannelConf(h1, { cniVersion: "1.1.0", delegate: {}, ipam: { type: "static", addresses: [{ address }] } });
    const ns = await Netns.create("cni-gcstatic");
    try {
      const att = (ifName: string) => ({ containerId: ns.name, netns: ns.path, ifName });
      await runFlannel(h1, "ADD", conf("198.19.5.250/24"), att("eth0"));
      await runFlannel(h1, "ADD", conf("198.19.5.251/24"), att("net1"));
      const jumps = masqJumps(await natRules(h1), ns.name);
      expect(jumps.map((l) => l.split(" ")[3]).sort()).toEqual(["198.19.5.250/32", "198.19.5.251/32"]);
      const chain = jumps[0].split(" -j ")[1];
      const valid = { "cni.dev/valid-attachments": [{ containerID: ns.name, ifname: "eth0" }] };
      expect(await runFlannel(h1, "GC", { ...conf("198.19.5.250/24"), ...valid })).toBeUndefined();
      expect((await kept(h1)).filter((f) => f.startsWith(ns.name))).toEqual([ns.name]);
      expect(masqJumps(await natRules(h1), ns.name)).toEqual(jumps);
      expect(await runFlannel(h1, "DEL", conf("198.19.5.250/24"), att("eth0"))).toBeUndefined();
      expect((await natRules(h1)).filter((l) => l.includes(chain) || l.includes(ns.name))).toEqual([]);
      expect(await kept(h1)).not.toContain(ns.name);
    } finally {
      await ns.destroy();
    }
  });

  it("GC tells attachments apart by container and interface: of one pod's eth0 and net1, only the one not listed is deleted", async () => {
    const conf = flannelConf(h1, { cniVersion: "1.1.0", delegate: {} }); // the bridge's ipMasq, as above
    const ns = await Netns.create("cni-gcif");
    try {
      const { att, eth0, net1 } = await addEth0Net1(conf, ns);
      expect(eth0).not.toBe(net1);
      // eth0 keeps flannel's file name, so either plugin finds it.
      expect((await kept(h1)).filter((f) => f.startsWith(ns.name)).sort()).toEqual([ns.name, `${ns.name}@net1`]);
      // Both interfaces share the bridge's masquerade chain (network and container name it), one jump each.
      const jumps = masqJumps(await natRules(h1), ns.name);
      expect(jumps.map((l) => l.split(" ")[3]).sort()).toEqual([`${eth0}/32`, `${net1}/32`].sort());
      const valid = { "cni.dev/valid-attachments": [{ containerID: ns.name, ifname: "eth0" }] };
      expect(await runFlannel(h1, "GC", { ...conf, ...valid })).toBeUndefined();
      expect(await ipamStore(h1)).toContain(eth0);
      expect(await ipamStore(h1)).not.toContain(net1);
      expect((await kept(h1)).filter((f) => f.startsWith(ns.name))).toEqual([ns.name]);
      // net1's jump went, eth0's and the chain stay: eth0 is still masqueraded.
      expect(masqJumps(await natRules(h1), ns.name)).toEqual(jumps.filter((l) => l.includes(`-s ${eth0}/32 `)));
      // Each DEL runs its own attachment's config: eth0's releases eth0's address and removes its
      // interface, and its masquerade chain (which the bridge cannot delete while net1's jump is left).
      await runFlannel(h1, "DEL", conf, att("eth0"));
      expect(await ipamStore(h1)).not.toContain(eth0);
      expect((await natRules(h1)).filter((l) => l.includes(jumps[0].split(" -j ")[1]))).toEqual([]);
      expect(
        await ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"]).then((l) => l.map((x) => x.ifname)),
      ).not.toContain("eth0");
      expect((await kept(h1)).filter((f) => f.startsWith(ns.name))).toEqual([]);
    } finally {
      await ns.destroy();
    }
  });

  it.each(FAMILY_CASES)(
    "%s: DEL without the pod's namespace (CNI_NETNS unset, or its path deleted) removes the bridge's masquerade chain and jumps (FLANNEL_IPMASQ=false), which the bridge's DEL then leaves; another pod's stay; a repeated DEL succeeds",
    async (_, dual) => {
      const { families, conf } = await masqConfOf("masq-subnet.env", dual);
      const pods = [
        await Netns.create("cni-delmasq"),
        await Netns.create("cni-delmasq"),
        await Netns.create("cni-delmasq"),
      ];
      const [unset, deleted, live] = pods;
      try {
        const addrs = await addPods(conf, pods);
        const before = await natOf(families);
        const chainOf = (ns: Netns) => masqJumps(before.get(4)!, ns.name)[0]?.split(" -j ")[1] ?? "";
        for (const ns of pods) {
          expect(addrs.get(ns)).toHaveLength(families.length);
          expect(chainOf(ns)).toMatch(/^CNI-[0-9a-f]{24}$/);
          for (const f of families) {
            expect(masqJumps(before.get(f)!, ns.name)).toHaveLength(1);
            expect(before.get(f)).toContain(`-N ${chainOf(ns)}`);
          }
        }
        // The pods' sandboxes died before the runtime's DEL: their namespaces went.
        await unset.destroy();
        await deleted.destroy();
        const del = async () => {
          expect(await runFlannel(h1, "DEL", conf, { containerId: unset.name })).toBeUndefined();
          expect(await runFlannel(h1, "DEL", conf, { containerId: deleted.name, netns: deleted.path })).toBeUndefined();
        };
        await del();
        for (const f of families) {
          const after = await natRules(h1, f);
          for (const ns of [unset, deleted])
            expect(after.filter((l) => l.includes(chainOf(ns)) || l.includes(ns.name))).toEqual([]);
          expect(after.filter((l) => l.includes(chainOf(live)))).toEqual(
            before.get(f)!.filter((l) => l.includes(chainOf(live))),
          );
        }
        for (const ns of [unset, deleted]) for (const a of addrs.get(ns)!) expect(await ipamStore(h1)).not.toContain(a);
        expect(await kept(h1)).not.toContain(unset.name);
        expect(await kept(h1)).not.toContain(deleted.name);
        await del();
        // live's DEL with its namespace: the bridge's own teardown, as before.
        expect(await runFlannel(h1, "DEL", conf, { containerId: live.name, netns: live.path })).toBeUndefined();
        for (const f of families) expect((await natRules(h1, f)).filter((l) => l.includes(chainOf(live)))).toEqual([]);
      } finally {
        for (const ns of pods) await ns.destroy();
      }
    },
  );

  /**
   * A CNI_PATH whose host-local (the real one) is held until the test's `go` (30 s at most): after
   * its ADD (the attachment's config kept and its address taken, the bridge's work not done), or
   * before its DEL (nothing freed yet). `held` resolves once it waits, with the pid of its parent
   * (the bridge).
   */
  const holdingPath = async (command: "ADD" | "DEL") => {
    const hold = await mkdtemp(join(lab.workDir, "hold-"));
    const [held, go] = [join(hold, "held"), join(hold, "go")];
    const wait = `if [ "$CNI_COMMAND" = ${command} ]; then\n  echo $PPID > ${held}.new && mv ${held}.new ${held}\n  i=0; while [ ! -e ${go} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\nfi\n`;
    const real = `out=$(${join(referencePluginDirs()[0], "host-local")}); rc=$?\n`;
    await writeFile(
      join(hold, "host-local"),
      `#!/bin/sh\n${command === "DEL" ? wait + real : real + wait}printf '%s\\n' "$out"; exit $rc\n`,
      { mode: 0o755 },
    );
    return {
      path: [hold, join(lab.workDir, "bin"), ...referencePluginDirs()],
      held: async () => {
        await eventually(
          `host-local's ${command} held`,
          async () => existsSync(held),
          (v) => v,
        );
        return Number((await readFile(held, "utf8")).trim());
      },
      go: () => writeFile(go, ""),
    };
  };
  /** Runs the flannel plugin on h1 with this CNI_PATH. */
  const runWith = (path: string[], command: "ADD" | "DEL" | "GC", conf: object, att: Partial<Attachment> = {}) =>
    execPlugin(
      "flannel",
      conf,
      { command, containerId: att.containerId, netns: att.netns, ifName: att.ifName ?? "eth0", path },
      { wrap: h1.ns.wrap([]) },
    );
  /** How a run ended: its result, or its error. */
  const settled = (p: Promise<unknown>) =>
    p.then(
      (r) => r,
      (e: unknown) => e,
    );
  /** Whether `p` is still pending after `ms` (a bound for something that must wait, never a speed). */
  const stillPending = async (p: Promise<unknown>, ms: number) =>
    await Promise.race([
      p.then(
        () => false,
        () => false,
      ),
      new Promise<boolean>((r) => setTimeout(() => r(true), ms)),
    ]);

  it("GC while a pod's net1 ADD runs (a runtime overlapping them, its list taken before) leaves net1 whole and deletes its done eth0, only eth0's jump (the chain net1's too); a second ADD of net1 is refused (11), another network's ADD of the sandbox (eth1, as go-cni runs them in parallel) is not; once net1's ADD is done, GC removes it", async () => {
    const conf = flannelConf(h1, { cniVersion: "1.1.0", delegate: {} }); // the bridge's ipMasq, as above
    // Another network of the sandbox, in the same (default-like) dataDir: its own subnet and bridge.
    const other = join(lab.hostDir(h1), "subnet-cbr1.env");
    await writeSubnetEnv(other, {
      v4: { network: LAB_POD_NETWORK, subnet: { addr: 0xc6130700, len: 24 } },
      mtu: 1400,
      ipMasq: false,
    });
    const conf1 = flannelConf(h1, {
      name: "cbr1",
      cniVersion: "1.1.0",
      subnetFile: other,
      delegate: { bridge: "cni1", ipMasq: false },
    });
    const ns = await Netns.create("cni-gcadd");
    const hold = await holdingPath("ADD");
    let adding: Promise<unknown> | undefined;
    try {
      const eth0 = (
        (await runFlannel(h1, "ADD", conf, { containerId: ns.name, netns: ns.path })) as CniResult
      ).ips![0].address.split("/")[0];
      adding = runWith(hold.path, "ADD", conf, { containerId: ns.name, netns: ns.path, ifName: "net1" });
      await hold.held();
      const store = await ipamStore(h1);
      expect(store).toContain(eth0);
      const files = (await kept(h1)).filter((f) => f.startsWith(ns.name)).sort();
      expect(files).toEqual([ns.name, `${ns.name}@net1`]);
      const jumps = masqJumps(await natRules(h1), ns.name);
      expect(jumps.map((l) => l.split(" ")[3])).toEqual([`${eth0}/32`]);
      const chain = jumps[0].split(" -j ")[1];
      const none = { "cni.dev/valid-attachments": [] };
      expect(await runFlannel(h1, "GC", { ...conf, ...none })).toBeUndefined();
      expect(await ipamStore(h1)).toEqual(store.filter((a) => a !== eth0));
      expect((await kept(h1)).filter((f) => f.startsWith(ns.name))).toEqual([`${ns.name}@net1`]);
      expect(masqJumps(await natRules(h1), ns.name)).toEqual([]);
      expect(await natRules(h1)).toContain(`-N ${chain}`);
      await expect(
        runFlannel(h1, "ADD", conf, { containerId: ns.name, netns: ns.path, ifName: "net1" }),
      ).rejects.toMatchObject({ cniCode: 11 });
      const eth1 = (
        (await runFlannel(h1, "ADD", conf1, { containerId: ns.name, netns: ns.path, ifName: "eth1" })) as CniResult
      ).ips![0].address;
      expect(eth1).toMatch(/^198\.19\.7\./);
      expect((await kept(h1)).filter((f) => f.startsWith(ns.name)).sort()).toEqual([
        `${ns.name}@eth1`,
        `${ns.name}@net1`,
      ]);
      await hold.go();
      const net1 = ((await adding) as CniResult).ips![0].address.split("/")[0];
      expect(store).toContain(net1);
      expect(masqJumps(await natRules(h1), ns.name).map((l) => l.split(" ")[3])).toEqual([`${net1}/32`]);
      // The ADD done, nothing keeps the attachment from a GC that does not list it.
      expect(await runFlannel(h1, "GC", { ...conf, ...none })).toBeUndefined();
      expect(await ipamStore(h1)).not.toContain(net1);
      expect((await kept(h1)).filter((f) => f.startsWith(ns.name))).toEqual([`${ns.name}@eth1`]);
      expect((await natRules(h1)).filter((l) => l.includes(chain))).toEqual([]);
      expect(await runFlannel(h1, "GC", { ...conf1, ...none })).toBeUndefined();
      expect((await kept(h1)).filter((f) => f.startsWith(ns.name))).toEqual([]);
    } finally {
      await hold.go();
      await adding?.catch(() => undefined);
      await ns.destroy();
    }
  });

  it("GC holds a gone attachment's lock until its DEL is done: a re-ADD of the container meanwhile (after the runtime's list) is refused (11) rather than have its new address freed by that DEL", async () => {
    const conf = flannelConf(h1, { cniVersion: "1.1.0" });
    const [ns, again] = [await Netns.create("cni-gcre"), await Netns.create("cni-gcre")];
    const cid = ns.name;
    const hold = await holdingPath("DEL");
    let gc: Promise<unknown> | undefined;
    try {
      const old = ((await runFlannel(h1, "ADD", conf, { containerId: cid, netns: ns.path })) as CniResult).ips![0];
      await ns.destroy(); // the runtime lost the sandbox
      await ageKept(join(lab.hostDir(h1), "flannel"));
      gc = runWith(hold.path, "GC", { ...conf, "cni.dev/valid-attachments": [] });
      await hold.held();
      const re = await settled(runFlannel(h1, "ADD", conf, { containerId: cid, netns: again.path }));
      await hold.go();
      expect(await gc).toBeUndefined();
      expect(re).toMatchObject({ cniCode: 11 });
      expect(await ipamStore(h1)).not.toContain(old.address.split("/")[0]);
      expect(await kept(h1)).not.toContain(cid);
      // The runtime's retry, GC done, works and keeps its address.
      const now = ((await runFlannel(h1, "ADD", conf, { containerId: cid, netns: again.path })) as CniResult).ips![0];
      expect(await ipamStore(h1)).toContain(now.address.split("/")[0]);
      expect(await kept(h1)).toContain(cid);
      await runFlannel(h1, "DEL", conf, { containerId: cid, netns: again.path });
    } finally {
      await hold.go();
      await gc?.catch(() => undefined);
      await ns.destroy();
      await again.destroy();
    }
  });

  it("GC leaves a kept file an ADD wrote less than a minute ago (a runtime's list taken just before the ADD ended cannot name it), and deletes it once older", async () => {
    const conf = flannelConf(h1, { cniVersion: "1.1.0" });
    const ns = await Netns.create("cni-gcgrace");
    try {
      const addr = (
        (await runFlannel(h1, "ADD", conf, { containerId: ns.name, netns: ns.path })) as CniResult
      ).ips![0].address.split("/")[0];
      const none = { "cni.dev/valid-attachments": [] };
      expect(await runFlannel(h1, "GC", { ...conf, ...none }, undefined, undefined, true)).toBeUndefined();
      expect(await ipamStore(h1)).toContain(addr);
      expect(await kept(h1)).toContain(ns.name);
      expect(await runFlannel(h1, "GC", { ...conf, ...none })).toBeUndefined();
      expect(await ipamStore(h1)).not.toContain(addr);
      expect(await kept(h1)).not.toContain(ns.name);
    } finally {
      await ns.destroy();
    }
  });

  it("DEL during its attachment's ADD waits for it, then frees the address that ADD took; one that waits over 10 s fails with 11 (the runtime retries)", async () => {
    const conf = flannelConf(h1);
    const ns = await Netns.create("cni-deladd");
    const att = { containerId: ns.name, netns: ns.path };
    let adding: Promise<unknown> | undefined;
    let hold = await holdingPath("ADD");
    try {
      adding = runWith(hold.path, "ADD", conf, att);
      await hold.held();
      const del = settled(runFlannel(h1, "DEL", conf, att));
      expect(await stillPending(del, 2000)).toBe(true);
      await hold.go();
      const addr = ((await adding) as CniResult).ips![0].address.split("/")[0];
      expect(await del).toBeUndefined();
      expect(await ipamStore(h1)).not.toContain(addr);
      expect(await kept(h1)).not.toContain(ns.name);
      hold = await holdingPath("ADD");
      adding = runWith(hold.path, "ADD", conf, att);
      await hold.held();
      await expect(runFlannel(h1, "DEL", conf, att)).rejects.toMatchObject({ cniCode: 11 });
      await hold.go();
      const again = ((await adding) as CniResult).ips![0].address.split("/")[0];
      expect(await runFlannel(h1, "DEL", conf, att)).toBeUndefined();
      expect(await ipamStore(h1)).not.toContain(again);
    } finally {
      await hold.go();
      await adding?.catch(() => undefined);
      await ns.destroy();
    }
  }, 60_000);

  it("a runtime that kills a slow ADD kills weft's plugin, not the delegate it runs, which holds the attachment's lock until it ends: the runtime's DEL waits for it, then removes what it built", async () => {
    const conf = flannelConf(h1);
    const ns = await Netns.create("cni-killadd");
    const att = { containerId: ns.name, netns: ns.path };
    const hold = await holdingPath("ADD");
    let adding: Promise<unknown> | undefined;
    try {
      const pods = async () => (await ipamStore(h1)).filter((a) => a.startsWith("198.19."));
      const before = await pods();
      adding = settled(runWith(hold.path, "ADD", conf, att));
      const bridge = await hold.held();
      const [addr, ...more] = (await pods()).filter((a) => !before.includes(a));
      expect(more).toEqual([]);
      // The bridge's parent is coreutils' timeout, bounding it; its parent weft's plugin (the
      // launcher execs Node.js; `ip netns exec` execs it).
      const parent = async (pid: number) =>
        Number((await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1].split(" ")[1]);
      const bound = await parent(bridge);
      expect((await readFile(`/proc/${bound}/cmdline`, "utf8")).split("\0")).toEqual(
        expect.arrayContaining([expect.stringMatching(/\/timeout$/), "--kill-after=5s", "60s"]),
      );
      const plugin = await parent(bound);
      expect(await readFile(`/proc/${plugin}/cmdline`, "utf8")).toContain("entry.js");
      process.kill(plugin, "SIGKILL");
      expect(await adding).toMatchObject({ message: expect.stringMatching(/SIGKILL/) });
      const del = settled(runFlannel(h1, "DEL", conf, att));
      expect(await stillPending(del, 2000)).toBe(true);
      await hold.go();
      expect(await del).toBeUndefined();
      expect(await ipamStore(h1)).not.toContain(addr);
      expect(await kept(h1)).not.toContain(ns.name);
      expect((await ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"])).map((l) => l.ifname)).toEqual([
        "lo",
      ]);
    } finally {
      await hold.go();
      await adding;
      await ns.destroy();
    }
  }, 60_000);

  it("a connection to an ADD's lock is closed at once: a client that keeps it open keeps no finished ADD alive (libcni waits for the plugin's exit)", async () => {
    const conf = flannelConf(h1);
    const ns = await Netns.create("cni-lockconn");
    const hold = await holdingPath("ADD");
    let adding: Promise<unknown> | undefined;
    let client: ReturnType<typeof spawn> | undefined;
    try {
      adding = runWith(hold.path, "ADD", conf, { containerId: ns.name, netns: ns.path });
      await hold.held();
      const locks = execFileSync(
        h1.ns.wrap(["cat", "/proc/net/unix"])[0],
        h1.ns.wrap(["cat", "/proc/net/unix"]).slice(1),
        {
          encoding: "utf8",
        },
      )
        .split("\n")
        .map((l) => l.trim().split(/\s+/).at(7) ?? "")
        .filter((n) => n.startsWith("@weft-cni"))
        // The listing shows the NULs Node.js pads the name with to the full sun_path as '@'.
        .map((n) => n.slice(1).replace(/@+$/, ""));
      expect(locks).toHaveLength(1);
      const script = `const c = require("node:net").connect("\\0${locks[0]}", () => console.log("connected")); c.on("close", () => console.log("closed")); c.on("error", (e) => console.log("error " + e.code)); setInterval(() => {}, 1000);`;
      const [cmd, ...args] = h1.ns.wrap([process.execPath, "-e", script]);
      client = spawn(cmd, args, { stdio: ["ignore", "pipe", "ignore"] });
      let said = "";
      client.stdout!.on("data", (b) => (said += b));
      await eventually(
        "the client connected",
        async () => said,
        (s) => s.includes("connected"),
      );
      await hold.go();
      expect(await stillPending(adding, 20_000)).toBe(false);
      expect(said).toContain("closed");
      await runFlannel(h1, "DEL", conf, { containerId: ns.name, netns: ns.path });
    } finally {
      client?.kill();
      await hold.go();
      await adding?.catch(() => undefined);
      await ns.destroy();
    }
  }, 60_000);

  it.each([
    ["ipMasqBackend nftables", { ipMasqBackend: "nftables" }],
    ["ipMasqBackend unset: a bridge from 1.6 takes nftables where iptables is unusable", {}],
  ])(
    "%s: GC and a DEL without the namespace remove the bridge's nftables masquerade rules of the attachments they delete, and only those, and the iptables chain and jumps Debian's bridge (1.1.1) made whatever the key",
    async (_, backend) => {
      const conf = flannelConf(h1, { cniVersion: "1.1.0", delegate: backend });
      const { comment, comments } = nftMasq;
      const pods = [await Netns.create("cni-nft"), await Netns.create("cni-nft"), await Netns.create("cni-nft")];
      const [gone, live, deleted] = pods;
      try {
        const addrs = await addPods(conf, pods);
        await nftMasq.write([
          ...pods.map((ns): [string, string] => [addrs.get(ns)![0], comment("cbr0", "eth0", ns.name)]),
          // The same container's rules on another network, and of another interface: never ours.
          ["198.19.9.2", comment("cbr9", "eth0", gone.name)],
          ["198.19.5.99", comment("cbr0", "net1", live.name)],
        ]);
        const before = await comments();
        expect(before).toHaveLength(5);
        for (const ns of pods) expect(masqJumps(await natRules(h1), ns.name)).toHaveLength(1);
        await gone.destroy();
        const valid = {
          "cni.dev/valid-attachments": [live, deleted].map((ns) => ({ containerID: ns.name, ifname: "eth0" })),
        };
        expect(await runFlannel(h1, "GC", { ...conf, ...valid })).toBeUndefined();
        expect(await comments()).toEqual(before.filter((c) => c !== comment("cbr0", "eth0", gone.name)));
        expect(await ipamStore(h1)).not.toContain(addrs.get(gone)![0]);
        expect(masqJumps(await natRules(h1), gone.name)).toEqual([]);
        expect(masqJumps(await natRules(h1), deleted.name)).toHaveLength(1);
        // A DEL without the namespace (the runtime's after the sandbox died).
        expect(await runFlannel(h1, "DEL", conf, { containerId: deleted.name })).toBeUndefined();
        expect(await comments()).toEqual(
          before.filter((c) => c !== comment("cbr0", "eth0", gone.name) && c !== comment("cbr0", "eth0", deleted.name)),
        );
        expect(masqJumps(await natRules(h1), deleted.name)).toEqual([]);
        expect(masqJumps(await natRules(h1), live.name)).toHaveLength(1);
        expect(await runFlannel(h1, "DEL", conf, { containerId: live.name })).toBeUndefined();
        expect(await comments()).toEqual(
          [comment("cbr0", "net1", live.name), comment("cbr9", "eth0", gone.name)].sort(),
        );
        expect(masqJumps(await natRules(h1), live.name)).toEqual([]);
      } finally {
        await nftMasq.remove();
        for (const ns of pods) await ns.destroy();
      }
    },
  );

  it('an nft that cannot list (no JSON support, before 0.9, no nf_tables): with ipMasqBackend unset a DEL without the namespace takes it as no nftables rules, says so on stderr and succeeds; with "nftables" it fails (5), its address freed, and the retry with nft working succeeds', async () => {
    const nft = await unusableNft();
    const confOf = (delegate: object) => flannelConf(h1, { delegate });
    const asked = { ipMasqBackend: "nftables" };
    const pods = [await Netns.create("cni-nonft"), await Netns.create("cni-nonft")];
    const [unset, nftables] = pods;
    const delWith = (delegate: object, ns: Netns) =>
      execPlugin(
        "flannel",
        confOf(delegate),
        {
          command: "DEL",
          containerId: ns.name,
          ifName: "eth0",
          path: [join(lab.workDir, "bin"), ...referencePluginDirs()],
        },
        { wrap: nft.wrap, env: nft.env },
      );
    try {
      const addrs = new Map([...(await addPods(confOf({}), [unset])), ...(await addPods(confOf(asked), [nftables]))]);
      for (const ns of pods) expect(masqJumps(await natRules(h1), ns.name)).toHaveLength(1);
      await unset.destroy();
      await nftables.destroy();
      expect(await delWith({}, unset)).toBeUndefined();
      expect(masqJumps(await natRules(h1), unset.name)).toEqual([]);
      expect(await ipamStore(h1)).not.toContain(addrs.get(unset)![0]);
      expect(await kept(h1)).not.toContain(unset.name);
      const said = await logged(nft.log);
      expect(said).toContain("nft -j list tables");
      expect(said.filter((l) => l.startsWith("weft cni: cannot list nftables"))).toEqual([
        expect.stringMatching(/JSON support not compiled-in.*ipMasqBackend is unset/),
      ]);
      await expect(delWith(asked, nftables)).rejects.toMatchObject({
        cniCode: 5,
        message: expect.stringMatching(/JSON support not compiled-in/),
      });
      expect(await ipamStore(h1)).not.toContain(addrs.get(nftables)![0]);
      expect(await kept(h1)).toContain(nftables.name);
      expect(await runFlannel(h1, "DEL", confOf(asked), { containerId: nftables.name })).toBeUndefined();
      expect(await kept(h1)).not.toContain(nftables.name);
      expect(masqJumps(await natRules(h1), nftables.name)).toEqual([]);
    } finally {
      for (const ns of pods) await ns.destroy();
    }
  });

  it('an iptables that cannot list the nat table (iptables-nft\'s "incompatible"): with ipMasqBackend "nftables" a DEL and a GC without the namespace say so on stderr and succeed, removing the nftables rules; with "iptables", or when the listing fails otherwise (a held xtables lock), the DEL fails (5), its address freed, and the retry with iptables working succeeds', async () => {
    const log = join(lab.workDir, "incompatible.log");
    const broken = await iptablesPath(
      log,
      ["iptables", "ip6tables"],
      "iptables v1.8.9 (nf_tables): table nat is incompatible, use 'nft' tool.",
    );
    const dataDir = join(lab.hostDir(h1), "flannel");
    const confOf = (backend: string) => flannelConf(h1, { cniVersion: "1.1.0", delegate: { ipMasqBackend: backend } });
    // A held lock passes: a bridge before 1.6 made the chain whatever the key, so it is not taken as none.
    const locked = await iptablesPath(log, ["iptables", "ip6tables"]);
    const runBroken = (command: "DEL" | "GC", conf: object, containerId?: string, env = broken) =>
      execPlugin(
        "flannel",
        conf,
        { command, containerId, ifName: "eth0", path: [join(lab.workDir, "bin"), ...referencePluginDirs()] },
        { wrap: h1.ns.wrap(["sh", "-c", `"$@" 2>>${log}`, "sh"]), env },
      );
    const { comment, comments } = nftMasq;
    const pods = [
      await Netns.create("cni-incompat"),
      await Netns.create("cni-incompat"),
      await Netns.create("cni-incompat"),
      await Netns.create("cni-incompat"),
    ];
    const [deleted, collected, ipt, held] = pods;
    // Debian's bridge (1.1.1) ignores the key: its chains are made whatever it is, removed here at the end.
    const chains = new Map<Netns, string>();
    try {
      const addrs = new Map([
        ...(await addPods(confOf("nftables"), [deleted, collected, held])),
        ...(await addPods(confOf("iptables"), [ipt])),
      ]);
      for (const ns of pods) chains.set(ns, masqJumps(await natRules(h1), ns.name)[0].split(" -j ")[1]);
      await nftMasq.write(
        [deleted, collected].map((ns): [string, string] => [addrs.get(ns)![0], comment("cbr0", "eth0", ns.name)]),
      );
      for (const ns of pods) await ns.destroy();
      expect(await runBroken("DEL", confOf("nftables"), deleted.name)).toBeUndefined();
      await expect(runBroken("DEL", confOf("nftables"), held.name, locked)).rejects.toMatchObject({
        cniCode: 5,
        message: expect.stringMatching(/xtables lock/),
      });
      expect(await ipamStore(h1)).not.toContain(addrs.get(held)![0]);
      expect(await kept(h1)).toContain(held.name);
      await ageKept(dataDir);
      const valid = {
        "cni.dev/valid-attachments": [ipt, held].map((ns) => ({ containerID: ns.name, ifname: "eth0" })),
      };
      expect(await runBroken("GC", { ...confOf("nftables"), ...valid })).toBeUndefined();
      for (const ns of [deleted, collected]) {
        expect(await ipamStore(h1)).not.toContain(addrs.get(ns)![0]);
        expect(await kept(h1)).not.toContain(ns.name);
      }
      expect(await comments()).toEqual([]);
      const said = await logged(log);
      expect(said.filter((l) => l.startsWith("weft cni: cannot list the IPv4 nat table"))).toEqual([
        expect.stringMatching(new RegExp(`incompatible.*"nftables".*${chains.get(deleted)}`)),
        expect.stringMatching(new RegExp(`incompatible.*"nftables".*${chains.get(collected)}`)),
      ]);
      // The iptables backend's DEL fails on it, as ever.
      await expect(runBroken("DEL", confOf("iptables"), ipt.name)).rejects.toMatchObject({
        cniCode: 5,
        message: expect.stringMatching(/incompatible/),
      });
      expect(await ipamStore(h1)).not.toContain(addrs.get(ipt)![0]);
      expect(await kept(h1)).toContain(ipt.name);
      for (const [ns, backend] of [
        [ipt, "iptables"],
        [held, "nftables"],
      ] as const) {
        expect(await runFlannel(h1, "DEL", confOf(backend), { containerId: ns.name })).toBeUndefined();
        expect(await kept(h1)).not.toContain(ns.name);
        expect(masqJumps(await natRules(h1), ns.name)).toEqual([]);
      }
    } finally {
      await nftMasq.remove();
      for (const ns of pods) await ns.destroy();
      const rules = await natRules(h1);
      for (const [ns, chain] of chains)
        if (rules.includes(`-N ${chain}`))
          await h1.ns.kernel.iptablesDelete(4, "nat", [
            `:${chain} - [0:0]`,
            ...masqJumps(rules, ns.name),
            `-X ${chain}`,
          ]);
    }
  });

  it("a file kept as flannel's plugin keeps it (no interface name) for a pod's net1, GC'd while nft cannot list (ipMasqBackend nftables): the file keeps net1 for the next GC, which removes net1's nftables rules, not eth0's", async () => {
    const conf = flannelConf(h1, { cniVersion: "1.1.0", delegate: { ipMasqBackend: "nftables" } });
    const { comment, comments } = nftMasq;
    const dataDir = join(lab.hostDir(h1), "flannel");
    const nft = await unusableNft();
    const ns = await Netns.create("cni-flnft");
    try {
      const r = (await runFlannel(h1, "ADD", conf, {
        containerId: ns.name,
        netns: ns.path,
        ifName: "net1",
      })) as CniResult;
      const addr = r.ips![0].address.split("/")[0];
      const { "weft.ifName": ifName, ...flannels } = JSON.parse(
        await readFile(join(dataDir, `${ns.name}@net1`), "utf8"),
      );
      expect(ifName).toBe("net1");
      await writeFile(join(dataDir, ns.name), JSON.stringify(flannels));
      await rm(join(dataDir, `${ns.name}@net1`));
      await nftMasq.write([
        [addr, comment("cbr0", "net1", ns.name)],
        ["198.19.5.98", comment("cbr0", "eth0", ns.name)],
      ]);
      await ns.destroy();
      const none = { "cni.dev/valid-attachments": [] };
      await expect(runFlannel(h1, "GC", { ...conf, ...none }, undefined, nft.env)).rejects.toMatchObject({
        cniCode: 5,
      });
      expect(await ipamStore(h1)).not.toContain(addr);
      expect(await kept(h1)).toContain(ns.name);
      expect(await runFlannel(h1, "GC", { ...conf, ...none })).toBeUndefined();
      expect(await comments()).toEqual([comment("cbr0", "eth0", ns.name)]);
      expect(await kept(h1)).not.toContain(ns.name);
    } finally {
      await nftMasq.remove();
      await ns.destroy();
    }
  });

  it("DEL without the namespace of one of a pod's two interfaces on the network removes only that interface's jump; the last one's DEL removes the chain", async () => {
    const conf = flannelConf(h1, { delegate: {} }); // the bridge's ipMasq, as above
    const ns = await Netns.create("cni-delif");
    try {
      const addrOf = async (ifName: string) =>
        (
          (await runFlannel(h1, "ADD", conf, { containerId: ns.name, netns: ns.path, ifName })) as CniResult
        ).ips![0].address.split("/")[0];
      const [eth0, net1] = [await addrOf("eth0"), await addrOf("net1")];
      const jumps = masqJumps(await natRules(h1), ns.name);
      expect(jumps).toHaveLength(2);
      const chain = jumps[0].split(" -j ")[1];
      const path = ns.path;
      await ns.destroy();
      expect(await runFlannel(h1, "DEL", conf, { containerId: ns.name, ifName: "net1" })).toBeUndefined();
      expect(await ipamStore(h1)).not.toContain(net1);
      // eth0 is still kept, so still masqueraded: its jump and the chain stay.
      expect(masqJumps(await natRules(h1), ns.name)).toEqual(jumps.filter((l) => l.includes(`-s ${eth0}/32 `)));
      expect(await natRules(h1)).toContain(`-N ${chain}`);
      expect(await runFlannel(h1, "DEL", conf, { containerId: ns.name, netns: path, ifName: "eth0" })).toBeUndefined();
      expect(await ipamStore(h1)).not.toContain(eth0);
      expect((await natRules(h1)).filter((l) => l.includes(chain) || l.includes(ns.name))).toEqual([]);
      expect((await kept(h1)).filter((f) => f.startsWith(ns.name))).toEqual([]);
    } finally {
      await ns.destroy();
    }
  });

  /**
   * ADD of a pod on h1 with the bridge's ipMasq (both families when `dual`), `change` done to it,
   * and its DEL with the namespace, its iptables calls logged (the bridge's too): the chain, jumps,
   * addresses and kept file all go. The calls, and weft's nat listings among them (`-w 5`; the
   * bridge's go-iptables says `--wait`).
   */
  const delMasqPod = async (name: string, dual: boolean, change: (ns: Netns) => Promise<unknown>) => {
    const { families, conf } = await masqConfOf(`${name}-subnet.env`, dual);
    const ns = await Netns.create(name);
    try {
      const addrs = (await addPods(conf, [ns])).get(ns)!;
      expect(addrs).toHaveLength(families.length);
      const chain = masqJumps(await natRules(h1), ns.name)[0].split(" -j ")[1];
      for (const f of families) expect(masqJumps(await natRules(h1, f), ns.name)).toHaveLength(1);
      await change(ns);
      const log = join(lab.workDir, `${ns.name}.iptables.log`);
      const env = await iptablesPath(log);
      expect(await runFlannel(h1, "DEL", conf, { containerId: ns.name, netns: ns.path }, env)).toBeUndefined();
      for (const f of families)
        expect((await natRules(h1, f)).filter((l) => l.includes(chain) || l.includes(ns.name))).toEqual([]);
      for (const a of addrs) expect(await ipamStore(h1)).not.toContain(a);
      expect(await kept(h1)).not.toContain(ns.name);
      const calls = await logged(log);
      return { chain, calls, listings: calls.filter((l) => / -w 5 -t nat -S$/.test(l)) };
    } finally {
      await ns.destroy();
    }
  };
  const listingsOf = (families: Array<4 | 6>) =>
    families.map((f) => `${f === 6 ? "ip6tables" : "iptables"} -w 5 -t nat -S`);

  it.each(FAMILY_CASES)(
    "%s: DEL with the pod's namespace but its interface deleted by something else removes the bridge's masquerade chain and jumps, which the bridge's DEL then leaves (it frees the address and stops), and frees the address",
    async (_, dual) => {
      const { listings } = await delMasqPod("cni-delnoif", dual, (ns) => ns.kernel.ipBatch(["link del eth0"]));
      expect(listings).toEqual(listingsOf(dual ? [4, 6] : [4]));
    },
  );

  it.each(FAMILY_CASES)(
    "%s: DEL with the pod's interface and its addresses there lists no nat table (a kube-proxy's may be big, its lock held): the bridge's own teardown removes the masquerade chain and jumps",
    async (_, dual) => {
      const { chain, calls, listings } = await delMasqPod("cni-dellive", dual, async () => {});
      // The bridge's teardown went through the logging PATH too: the log is the DEL's.
      expect(calls.some((l) => l.includes(chain))).toBe(true);
      expect(listings).toEqual([]);
    },
  );

  it.each(FAMILY_CASES)(
    "%s: DEL with the pod's interface there but its addresses of one family flushed (the bridge tears down only what it finds on it) removes that family's masquerade rules, listing only that family's nat table",
    async (_, dual) => {
      const flushed = dual ? 6 : 4;
      const { listings } = await delMasqPod("cni-delflush", dual, (ns) =>
        ns.exec(["ip", `-${flushed}`, "addr", "flush", "dev", "eth0", "scope", "global"]),
      );
      expect(listings).toEqual(listingsOf([flushed]));
    },
  );

  it.each(FAMILY_CASES)(
    "%s: DEL with the pod's IPv4 address replaced by a link-local one (kernel scope global, but the bridge takes only Go's global unicast addresses) removes the IPv4 masquerade rules, listing only the IPv4 nat table",
    async (_, dual) => {
      // On the pod's interface in its own namespace only; nothing is sent.
      const { listings } = await delMasqPod("cni-dellink", dual, async (ns) => {
        await ns.exec(["ip", "-4", "addr", "flush", "dev", "eth0", "scope", "global"]);
        await ns.exec(["ip", "addr", "add", "169.254.7.7/16", "dev", "eth0"]);
      });
      expect(listings).toEqual(listingsOf([4]));
    },
  );

  it("DEL with the namespace of one of a pod's two interfaces on the network, that interface deleted by something else, removes only its jump; eth0's and the chain stay", async () => {
    const conf = flannelConf(h1, { delegate: {} }); // the bridge's ipMasq, as above
    const ns = await Netns.create("cni-delnoif1");
    try {
      const { att, eth0, net1 } = await addEth0Net1(conf, ns);
      const jumps = masqJumps(await natRules(h1), ns.name);
      expect(jumps.map((l) => l.split(" ")[3]).sort()).toEqual([`${eth0}/32`, `${net1}/32`].sort());
      const chain = jumps[0].split(" -j ")[1];
      await ns.kernel.ipBatch(["link del net1"]);
      expect(await runFlannel(h1, "DEL", conf, att("net1"))).toBeUndefined();
      expect(await ipamStore(h1)).not.toContain(net1);
      expect(masqJumps(await natRules(h1), ns.name)).toEqual(jumps.filter((l) => l.includes(`-s ${eth0}/32 `)));
      expect(await natRules(h1)).toContain(`-N ${chain}`);
      expect(await runFlannel(h1, "DEL", conf, att("eth0"))).toBeUndefined();
      expect((await natRules(h1)).filter((l) => l.includes(chain) || l.includes(ns.name))).toEqual([]);
      expect((await kept(h1)).filter((f) => f.startsWith(ns.name))).toEqual([]);
    } finally {
      await ns.destroy();
    }
  });

  it("a file kept as flannel's plugin keeps it (`<id>`, no interface name) for a pod's net1: GC keeps it while the container is listed, DEL of net1 runs it; GC of an unlisted container frees net1's address", async () => {
    const conf = flannelConf(h1, { cniVersion: "1.1.0" });
    const [a, b] = [await Netns.create("cni-flnet1"), await Netns.create("cni-flnet1")];
    try {
      const dataDir = join(lab.hostDir(h1), "flannel");
      const links = async (ns: Netns) =>
        (await ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"])).map((l) => l.ifname);
      // Added as net1 under flannel's plugin: the same delegate config, in `<id>`, without weft.ifName.
      const addNet1 = async (ns: Netns) => {
        const r = (await runFlannel(h1, "ADD", conf, {
          containerId: ns.name,
          netns: ns.path,
          ifName: "net1",
        })) as CniResult;
        const { "weft.ifName": _, ...d } = JSON.parse(await readFile(join(dataDir, `${ns.name}@net1`), "utf8"));
        await writeFile(join(dataDir, ns.name), JSON.stringify(d));
        await rm(join(dataDir, `${ns.name}@net1`));
        return r.ips![0].address.split("/")[0];
      };
      const [addrA, addrB] = [await addNet1(a), await addNet1(b)];
      const valid = (...ns: Netns[]) => ({
        "cni.dev/valid-attachments": ns.map((n) => ({ containerID: n.name, ifname: "net1" })),
      });
      expect(await runFlannel(h1, "GC", { ...conf, ...valid(a, b) })).toBeUndefined();
      expect(await kept(h1)).toEqual(expect.arrayContaining([a.name, b.name]));
      expect(await ipamStore(h1)).toEqual(expect.arrayContaining([addrA, addrB]));
      // The runtime's DEL of net1: the delegate's DEL runs for net1 (interface and address gone).
      expect(await runFlannel(h1, "DEL", conf, { containerId: a.name, netns: a.path, ifName: "net1" })).toBeUndefined();
      expect(await links(a)).not.toContain("net1");
      expect(await ipamStore(h1)).not.toContain(addrA);
      expect(await kept(h1)).not.toContain(a.name);
      // The runtime lost b without a DEL: GC finds net1 in host-local's store, and frees its address.
      await b.destroy();
      expect(await runFlannel(h1, "GC", { ...conf, ...valid(a) })).toBeUndefined();
      expect(await ipamStore(h1)).not.toContain(addrB);
      expect(await kept(h1)).not.toContain(b.name);
    } finally {
      await a.destroy();
      await b.destroy();
    }
  });

  it.each([null, undefined])(
    "GC with cni.dev/valid-attachments %s (libcni's nil slice when no pod uses the network; or left out) deletes every kept attachment",
    async (none) => {
      const conf = flannelConf(h1, { cniVersion: "1.1.0" });
      const ns = await Netns.create("cni-gcnull");
      const r = (await runFlannel(h1, "ADD", conf, { containerId: ns.name, netns: ns.path })) as CniResult;
      // The runtime lost the pod without a DEL; its namespace went (the lab removes it on exit otherwise).
      await ns.destroy();
      expect(await runFlannel(h1, "GC", { ...conf, "cni.dev/valid-attachments": none })).toBeUndefined();
      // The bridge plugin's DEL ran: host-local released the address; and the kept config went.
      expect(await ipamStore(h1)).not.toContain(r.ips![0].address.split("/")[0]);
      expect(await kept(h1)).not.toContain(ns.name);
    },
  );

  it("DEL after the conflist went from 0.3.1 to 1.0.0: the kept 0.3.1 ipvlan config runs without the runtime's 1.0.0 prevResult, which it cannot parse", async () => {
    const ns = await Netns.create("cni-ver");
    try {
      const att = { containerId: ns.name, netns: ns.path };
      const added = flannelConf(h1, { cniVersion: "0.3.1", delegate: { type: "ipvlan", master: h1.underlayIf } });
      const dataDir = join(lab.hostDir(h1), "flannel");
      // This kernel has no ipvlan to ADD with, so the pod is as ipvlan's ADD leaves it once its
      // interface went with the namespace: an address taken from host-local, the config kept as ADD keeps it.
      const d = delegateConfig(
        parseNetConf(JSON.stringify(added)),
        parseSubnetEnvFile(await readFile(subnetFile(h1), "utf8"), "subnet.env"),
      );
      const paths = { path: referencePluginDirs(), ifName: "eth0", ...att };
      const r = (await execPlugin("host-local", d, { command: "ADD", ...paths })) as CniResult;
      const addr = r.ips![0].address.split("/")[0];
      await mkdir(dataDir, { recursive: true });
      await writeFile(join(dataDir, ns.name), JSON.stringify({ ...d, "weft.ifName": "eth0" }));
      // libcni hands DEL the cached result converted to the list's new version.
      const prevResult = { ...r, cniVersion: "1.0.0", ips: r.ips!.map((ip) => ({ ...ip, version: undefined })) };
      expect(await runFlannel(h1, "DEL", flannelConf(h1, { prevResult }), att)).toBeUndefined();
      expect(await kept(h1)).not.toContain(ns.name);
      expect(await ipamStore(h1)).not.toContain(addr);
    } finally {
      await ns.destroy();
    }
  });

  it("DEL runs what ADD kept even when the config has since been edited into one ADD refuses (delegate.ipam)", async () => {
    const ns = await Netns.create("cni-edit");
    try {
      const att = { containerId: ns.name, netns: ns.path };
      const r = (await runFlannel(h1, "ADD", flannelConf(h1), att)) as CniResult;
      const addr = r.ips![0].address.split("/")[0];
      const edited = flannelConf(h1, { delegate: { ipam: { type: "host-local" } } });
      await expect(runFlannel(h1, "ADD", edited, att)).rejects.toMatchObject({ cniCode: 7 });
      expect(await runFlannel(h1, "DEL", edited, att)).toBeUndefined();
      expect(
        await ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"]).then((l) => l.map((x) => x.ifname)),
      ).toEqual(["lo"]);
      expect(await ipamStore(h1)).not.toContain(addr);
      expect(await kept(h1)).not.toContain(ns.name);
    } finally {
      await ns.destroy();
    }
  });

  let pod: LabPod;
  it("ADD gives the pod an address of the node's subnet, a default route, a route to the network and the MTU", async () => {
    pod = await lab.addPod(h1, subnetFile(h1));
    expect(prefixContains(S1, pod.addr)).toBe(true);
    expect(pod.addr).not.toBe(S1.addr + 1); // the gateway's
    expect(pod.result.cniVersion).toBe("1.0.0");
    const addrs = await pod.ns.kernel.ipJson<
      Array<{ ifname: string; mtu: number; addr_info: Array<{ family: string; local: string; prefixlen: number }> }>
    >(["addr", "show", "dev", "eth0"]);
    expect(addrs[0].mtu).toBe(1400);
    expect(addrs[0].addr_info.filter((a) => a.family === "inet").map((a) => `${a.local}/${a.prefixlen}`)).toEqual([
      `${formatIpv4(pod.addr)}/24`,
    ]);
    const routes = await pod.ns.kernel.ipJson<Array<{ dst: string; gateway?: string }>>(["-4", "route", "show"]);
    const gw = formatIpv4(S1.addr + 1);
    expect(routes.map((r) => `${r.dst} ${r.gateway ?? "-"}`).sort()).toEqual([
      `198.19.0.0/16 ${gw}`,
      `198.19.5.0/24 -`,
      `default ${gw}`,
    ]);
    // The bridge plugin made cni0 the gateway, with the MTU.
    const cni0 = await h1.ns.kernel.ipJson<Array<{ mtu: number; addr_info: Array<{ family: string; local: string }> }>>(
      ["addr", "show", "dev", "cni0"],
    );
    expect(cni0[0].mtu).toBe(1400);
    expect(cni0[0].addr_info.filter((a) => a.family === "inet").map((a) => a.local)).toEqual([gw]);
    expect(await ipamStore(h1)).toContain(formatIpv4(pod.addr));
    expect(await kept(h1)).toEqual([pod.attachment.containerId]);
  });

  it("CHECK passes for the pod as added, and fails once its address is gone", async () => {
    await lab.cni(h1, subnetFile(h1)).check(pod.attachment, pod.result);
    const other = await lab.addPod(h1, subnetFile(h1));
    await other.ns.ip("addr flush dev eth0");
    const e = await lab
      .cni(h1, subnetFile(h1))
      .check(other.attachment, other.result)
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CniError);
    expect((e as CniError).message).toMatch(/bridge: Failed to match addr/);
    await lab.removePod(other);
  });

  it("CHECK fails (101) once the pod's address is outside the node's subnet, as after a lease change", async () => {
    const moved = join(lab.hostDir(h1), "moved-subnet.env");
    await writeSubnetEnv(moved, {
      v4: { network: LAB_POD_NETWORK, subnet: { addr: 0xc6130800, len: 24 } },
      mtu: 1400,
      ipMasq: false,
    });
    const e = await runFlannel(
      h1,
      "CHECK",
      flannelConf(h1, { subnetFile: moved, prevResult: pod.result }),
      pod.attachment,
    ).catch((x: unknown) => x);
    expect(e).toMatchObject({ cniCode: 101, code: "CNI_ADDRESS_OUTSIDE_SUBNET" });
    expect((e as CniError).message).toMatch(/outside this node's subnet 198\.19\.8\.0\/24/);
  });

  it("CHECK under cniVersion 0.3.1 is the spec's incompatible-version error (1)", async () => {
    const e = await runFlannel(
      h1,
      "CHECK",
      flannelConf(h1, { cniVersion: "0.3.1", prevResult: pod.result }),
      pod.attachment,
    ).catch((x: unknown) => x);
    expect(e).toMatchObject({ cniCode: 1, code: "CNI_INCOMPATIBLE_VERSION" });
  });

  it("portmap: a hostPort on the host's underlay address reaches the pod, from another host", async () => {
    const served = await lab.addPod(h1, subnetFile(h1), {
      portMappings: [{ hostPort: 8080, containerPort: 8000, protocol: "tcp" }],
    });
    const [cmd, ...argv] = served.ns.wrap([
      process.execPath,
      "-e",
      `require("net").createServer((s) => s.end("hello from ${served.name}")).listen(8000, () => console.log("up"))`,
    ]);
    const server = spawn(cmd, argv, { stdio: ["ignore", "pipe", "inherit"] });
    try {
      await new Promise((r) => server.stdout!.once("data", r));
      const fetchFrom = (ns: Netns, addr: string, port: number) =>
        ns.exec(
          [
            process.execPath,
            "-e",
            `const s = require("net").connect(${port}, "${addr}"); let d = ""; s.on("data", (b) => (d += b)); s.on("end", () => console.log(d)); s.on("error", (e) => console.log("error " + e.code)); s.setTimeout(3000, () => { console.log("timeout"); s.destroy(); });`,
          ],
          { timeoutMs: 10_000 },
        );
      expect((await fetchFrom(h2.ns, formatIpv4(h1.underlayAddr), 8080)).trim()).toBe(`hello from ${served.name}`);
      await lab.removePod(served);
      // DEL removed the mapping: nothing listens on the host's port 8080.
      expect((await fetchFrom(h2.ns, formatIpv4(h1.underlayAddr), 8080)).trim()).toBe("error ECONNREFUSED");
    } finally {
      server.kill("SIGKILL");
    }
  });

  it("DEL removes the interface and releases the address in host-local's store; a repeated DEL succeeds", async () => {
    const ip = formatIpv4(pod.addr);
    const veths = await hostVeths(h1);
    await lab.cni(h1, subnetFile(h1)).del(pod.attachment, pod.result);
    expect(await ipamStore(h1)).not.toContain(ip);
    expect((await hostVeths(h1)).length).toBe(veths.length - 1);
    expect(
      await pod.ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"]).then((l) => l.map((x) => x.ifname)),
    ).toEqual(["lo"]);
    expect(await kept(h1)).toEqual([]);
    await lab.cni(h1, subnetFile(h1)).del(pod.attachment, pod.result);
    await lab.cni(h1, subnetFile(h1)).del({ ...pod.attachment, containerId: "never-added" });
    await lab.removePod(pod); // DEL once more, then the namespace
  });

  it("both families: with FLANNEL_IPV6_* in subnet.env, ADD gives an IPv6 address of the node's IPv6 subnet and a route to the IPv6 network too", async () => {
    const file = join(lab.hostDir(h1), "dual-subnet.env");
    await writeFile(
      file,
      `${await readFile(subnetFile(h1), "utf8")}FLANNEL_IPV6_NETWORK=2001:2:0:8000::/49\nFLANNEL_IPV6_SUBNET=2001:2:0:8005::1/64\n`,
    );
    const dual = await lab.addPod(h1, file);
    try {
      const v6 = dual.result.ips!.filter((i) => i.address.includes(":"));
      expect(v6.length).toBe(1);
      expect(v6[0].address).toMatch(/^2001:2:0:8005::[0-9a-f]+\/64$/);
      expect(v6[0].gateway).toBe("2001:2:0:8005::1");
      const routes = await dual.ns.kernel.ipJson<Array<{ dst: string; gateway?: string }>>(["-6", "route", "show"]);
      expect(routes.map((r) => `${r.dst} ${r.gateway ?? "-"}`)).toContain("2001:2:0:8000::/49 2001:2:0:8005::1");
      const addrs = await dual.ns.kernel.ipJson<
        Array<{ addr_info: Array<{ family: string; local: string; scope: string }> }>
      >(["addr", "show", "dev", "eth0"]);
      expect(
        addrs[0].addr_info.filter((a) => a.family === "inet6" && a.scope === "global").map((a) => a.local),
      ).toEqual([v6[0].address.split("/")[0]]);
    } finally {
      await lab.removePod(dual);
    }
  });

  it("IPv6-only: with only FLANNEL_IPV6_* in subnet.env, ADD gives the pod an IPv6 address and route and no IPv4 address", async () => {
    const file = join(lab.hostDir(h1), "v6-subnet.env");
    await writeSubnetEnv(file, {
      v6: { network: LAB_POD_NETWORK6, subnet: parsePrefix6("2001:2:0:8006::/64") },
      mtu: 1430,
      ipMasq: false,
    });
    const pod6 = await lab.addPod(h1, file);
    try {
      expect(pod6.result.ips!.map((i) => i.address)).toEqual([expect.stringMatching(/^2001:2:0:8006::[0-9a-f]+\/64$/)]);
      expect(pod6.addr6).toBeDefined();
      expect(() => pod6.addr).toThrow(expect.objectContaining({ code: "LAB_POD_NO_ADDRESS" }));
      const addrs = await pod6.ns.kernel.ipJson<
        Array<{ mtu: number; addr_info: Array<{ family: string; local: string; scope: string }> }>
      >(["addr", "show", "dev", "eth0"]);
      expect(addrs[0].mtu).toBe(1430);
      expect(addrs[0].addr_info.filter((a) => a.family === "inet")).toEqual([]);
      const routes = await pod6.ns.kernel.ipJson<Array<{ dst: string; gateway?: string }>>(["-6", "route", "show"]);
      expect(routes.map((r) => `${r.dst} ${r.gateway ?? "-"}`)).toContain("2001:2:0:8000::/49 2001:2:0:8006::1");
    } finally {
      await lab.removePod(pod6);
    }
  });

  describe("a missing or malformed subnet.env is a CNI error, and no pod is half built", () => {
    const cases: Array<[string, string | undefined, number, RegExp]> = [
      ["missing", undefined, 11, /does not exist yet/],
      [
        "MTU not a number",
        "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.5.1/24\nFLANNEL_MTU=abc\nFLANNEL_IPMASQ=false\n",
        7,
        /FLANNEL_MTU: must be a whole number/,
      ],
      [
        "subnet outside the network",
        "FLANNEL_NETWORK=198.19.0.0/17\nFLANNEL_SUBNET=198.19.200.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
        7,
        /FLANNEL_SUBNET: 198\.19\.200\.0\/24 is not inside/,
      ],
      [
        "no FLANNEL_IPMASQ",
        "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.5.1/24\nFLANNEL_MTU=1450\n",
        7,
        /FLANNEL_IPMASQ/,
      ],
      ["empty", "", 7, /FLANNEL_MTU/],
    ];
    it.each(cases)("%s", async (_, text, code, msg) => {
      const file = join(lab.hostDir(h1), "bad-subnet.env");
      await rm(file, { force: true });
      if (text !== undefined) await writeFile(file, text);
      const ns = await Netns.create("cni-bad");
      try {
        const veths = await hostVeths(h1);
        const store = await ipamStore(h1);
        const e = await runFlannel(h1, "ADD", flannelConf(h1, { subnetFile: file }), {
          containerId: ns.name,
          netns: ns.path,
        }).catch((x: unknown) => x);
        expect(e).toBeInstanceOf(CniError);
        expect((e as CniError).cniCode).toBe(code);
        expect((e as CniError).message).toMatch(msg);
        expect(
          await ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"]).then((l) => l.map((x) => x.ifname)),
        ).toEqual(["lo"]);
        expect(await hostVeths(h1)).toEqual(veths);
        expect(await ipamStore(h1)).toEqual(store);
        expect(await kept(h1)).not.toContain(ns.name);
      } finally {
        await ns.destroy();
      }
    });
  });

  it("config errors carry the spec's codes: not JSON (6), unknown version (1), a bad key (7), no CNI_CONTAINERID (4)", async () => {
    const att = { containerId: "c1", netns: "/run/netns/none" };
    const codeOf = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (e: CniError) => e.cniCode,
      );
    const exec = (stdin: string, a: Partial<Attachment> = att) =>
      new Promise<{ code: number; msg: string }>((resolve) => {
        const child = spawn(join(lab.workDir, "bin", "flannel"), [], {
          env: {
            ...process.env,
            CNI_COMMAND: "ADD",
            CNI_CONTAINERID: a.containerId,
            CNI_NETNS: a.netns,
            CNI_IFNAME: "eth0",
            CNI_PATH: "/usr/lib/cni",
          },
        });
        let out = "";
        child.stdout.on("data", (b) => (out += b));
        child.on("close", (status) => resolve({ ...JSON.parse(out), status }));
        child.stdin.end(stdin);
      });
    expect(await exec("{not json")).toMatchObject({ code: 6, status: 1 });
    expect(await codeOf(runFlannel(h1, "ADD", flannelConf(h1, { cniVersion: "9.9.9" }), att))).toBe(1);
    expect(await exec(JSON.stringify(flannelConf(h1, { delegate: { ipam: {} } })))).toMatchObject({
      code: 7,
      msg: expect.stringMatching(/delegate: must not have 'ipam'/),
    });
    expect(await exec(JSON.stringify(flannelConf(h1)), { netns: "/run/netns/none" })).toMatchObject({
      code: 4,
      msg: expect.stringMatching(/CNI_CONTAINERID/),
    });
    expect(
      await exec(JSON.stringify(flannelConf(h1)), { containerId: "../etc", netns: "/run/netns/none" }),
    ).toMatchObject({ code: 4 });
  });

  it("50 pods added and deleted concurrently on one host: distinct addresses, and no address, veth, kept config or lock left", async () => {
    const pods = await Promise.all(Array.from({ length: 50 }, () => lab.addPod(h2, subnetFile(h2))));
    const addrs = new Set(pods.map((p) => p.addr));
    expect(addrs.size).toBe(50);
    expect(pods.every((p) => prefixContains(S2, p.addr))).toBe(true);
    expect((await hostVeths(h2)).length).toBe(50);
    expect((await ipamStore(h2)).filter((f) => /^\d/.test(f)).length).toBe(50);
    await Promise.all(pods.map((p) => lab.removePod(p)));
    expect(await hostVeths(h2)).toEqual([]);
    expect(await ipamStore(h2)).toEqual(["last_reserved_ip.0", "lock"]);
    expect(await kept(h2)).toEqual([]);
    // No plugin process is left in the host (none holding host-local's lock), and the lock is free: one more ADD and DEL work.
    expect(execFileSync("ip", ["netns", "pids", h2.ns.name], { encoding: "utf8" }).trim()).toBe("");
    const last = await lab.addPod(h2, subnetFile(h2));
    await lab.removePod(last);
    expect(await ipamStore(h2)).toEqual(["last_reserved_ip.0", "lock"]);
  }, 180_000);
});
