// A bad net-conf.json stops the agent before it touches anything: it exits non-zero with one line
// naming the key, the value and what is allowed, and the host's links, addresses, routes and
// nftables tables are exactly what they were. Also: flags come from WEFT_<FLAG> variables.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LabAgents, type LabAgent } from "../../src/lab/agents.js";
import { LabCluster, type LabHost } from "../../src/lab/cluster.js";
import { projectFile } from "../../src/paths.js";
import { canUseNetns } from "../support/netns.js";
import { NETWORK, netConf, nftTables } from "./support.js";

const run = promisify(execFile);

/**
 * The host's kernel state an agent could change: links, IPv4 addresses, routes and permanent
 * neighbours, nftables tables. (IPv6 is left out: the kernel's own duplicate address detection
 * changes link-local addresses and routes meanwhile.)
 */
async function kernelState(h: LabHost): Promise<unknown> {
  const k = h.ns.kernel;
  const links = await k.ipJson<Array<{ ifname: string; address?: string; mtu: number; flags: string[]; master?: string }>>(["link", "show"]);
  return {
    links: links.map((l) => ({ ifname: l.ifname, address: l.address, mtu: l.mtu, flags: l.flags, master: l.master })),
    addrs: await k.ipJson(["-4", "addr", "show"]),
    routes: await k.ipJson(["-4", "route", "show", "table", "all"]),
    neighs: await k.ipJson(["-4", "neigh", "show", "nud", "permanent"]),
    nft: await nftTables(h),
  };
}

describe.skipIf(!canUseNetns())("agent: bad configs", () => {
  let lab: LabCluster;
  let agents: LabAgents;
  let a: LabAgent;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "acf", hosts: 1 });
    agents = await LabAgents.prepare(lab, () => netConf("vxlan"));
    a = agents.agents[0];
  });

  afterAll(async () => {
    await agents?.stopAll();
    await lab?.destroy();
  });

  it.each([
    ["an unknown Backend.Type", { Network: NETWORK, Backend: { Type: "vxlan2" } }, /^weft: \[CONFIG_NET_CONF_INVALID\] \S+net-conf\.json: Backend\.Type is "vxlan2"; valid types are vxlan, host-gw, udp, wasm-vxlan$/],
    ["a Network that is no prefix", { Network: "198.19.0.0/33" }, /: Network = "198\.19\.0\.0\/33": .*not an IPv4 prefix \(expected address\/length/],
    ["a Network with host bits set", { Network: "198.19.1.0/16" }, /: Network = "198\.19\.1\.0\/16": .*host bits set; did you mean 198\.19\.0\.0\/16\?$/],
    ["an unknown top-level key", { Network: NETWORK, Backnd: { Type: "udp" } }, /unknown key\(s\) Backnd; allowed here: Network, SubnetLen, SubnetMin, SubnetMax, EnableIPv4, EnableIPv6, IPv6Network, IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax, Backend$/],
    ["a key the backend does not have", { Network: NETWORK, Backend: { Type: "udp", VNI: 2 } }, /: Backend = .*unknown key\(s\) VNI; allowed here: Type, Port, Workers, Offloads \(Backend\.Type udp\)$/],
    ["a value out of range", { Network: NETWORK, Backend: { Type: "vxlan", VNI: 16777216 } }, /: Backend\.VNI = 16777216: .*16777215/],
  ])("%s: exits non-zero with one error naming it, and changes nothing in the kernel", async (_what, conf, message) => {
    const before = await kernelState(a.host);
    await writeFile(agents.netConfPath(a), JSON.stringify(conf));
    await rm(join(a.dir, "agent.log"), { force: true });
    agents.start(a, ["--ip-masq"]); // so that an nftables table would show up too
    expect(await agents.exited(a)).toBe(1);
    const lines = (await readFile(join(a.dir, "agent.log"), "utf8")).trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(message);
    expect(await kernelState(a.host)).toEqual(before);
    expect(existsSync(join(a.dir, "subnet.env"))).toBe(false);
  });

  it("takes its flags from WEFT_<FLAG> environment variables", async () => {
    const conf = join(a.dir, "env-conf.json");
    await writeFile(conf, JSON.stringify({ Network: NETWORK, Backend: { Type: "geneve" } }));
    const before = await kernelState(a.host);
    const env = { ...process.env, WEFT_NET_CONFIG: conf, WEFT_KEY_FILE: join(agents.dir, "cluster.key"), WEFT_STATE_DIR: a.dir, WEFT_SUBNET_FILE: join(a.dir, "subnet.env"), WEFT_IFACE: "eth0" };
    const failed = await run("ip", ["netns", "exec", a.host.ns.name, process.execPath, projectFile("dist", "src", "cli", "main.js"), "agent"], { env, timeout: 20_000 }).then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    );
    expect(failed?.code).toBe(1);
    // The message names the file it read, so the variable was used (the default path does not exist here).
    expect(failed?.stderr.trim()).toBe(`weft: [CONFIG_NET_CONF_INVALID] ${conf}: Backend.Type is "geneve"; valid types are vxlan, host-gw, udp, wasm-vxlan`);
    expect(await kernelState(a.host)).toEqual(before);
  });
});
