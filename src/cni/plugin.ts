// The flannel CNI plugin's behaviour, for `weft cni`: read the node's subnet.env, turn the
// network config's `delegate` into a complete config for the plugin that builds the pod (the
// reference `bridge` plugin with `host-local` IPAM over this node's subnet, a route to the pod
// network, the MTU, ipMasq and isGateway), keep that config in dataDir, and run it. DEL and CHECK
// run the kept config, so they work even after subnet.env changed.
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../fs/atomic-write.js";
import { cidrContains, firstHostOf, networkOf, parseCidr } from "./cidr.js";
import {
  DEFAULT_VERSION,
  parseNetConf,
  parseSubnetEnvFile,
  SUPPORTED_VERSIONS,
  type FlannelNetConf,
  type SubnetEnv,
} from "./config.js";
import { CNI_ERROR, CniError } from "./errors.js";
import { execPlugin, type CniArgs } from "./exec.js";

/** The delegate's config, as flannel's plugin builds it (delegate keys given in the config win). */
export function delegateConfig(conf: FlannelNetConf, env: SubnetEnv): Record<string, unknown> {
  const d: Record<string, unknown> = { ...conf.delegate };
  d.name = conf.name;
  // As flannel: without a version of its own the config leaves the delegate's (or its default).
  if (conf.cniVersion) d.cniVersion = conf.cniVersion;
  d.type ??= "bridge";
  // Masquerading is done once: by the agent (FLANNEL_IPMASQ=true) or else by the bridge plugin.
  d.ipMasq ??= !env.ipMasq;
  d.mtu ??= env.mtu;
  if (d.type === "bridge") d.isGateway ??= true;
  if (conf.runtimeConfig) d.runtimeConfig = conf.runtimeConfig;
  const ipam: Record<string, unknown> = { ...conf.ipam };
  ipam.type ??= "host-local";
  // host-local: one range set per family, each the node's subnet (the gateway takes its first address).
  ipam.ranges = env.families.map((f) => [{ subnet: networkOf(f.subnet) }]);
  // The route to the pod network names its gateway (host-local's default, network + 1), where
  // flannel's plugin leaves it out: the kernel route is the same, and the bridge plugin's CHECK
  // before v1.3.0 (Debian's is 1.1.1) fails on routes without one (containernetworking/plugins#886).
  ipam.routes = [
    ...((conf.ipam?.routes as unknown[] | undefined) ?? []),
    ...env.families.flatMap((f) => f.network.map((n) => ({ dst: networkOf(n), gw: firstHostOf(f.subnet) }))),
  ];
  d.ipam = ipam;
  return d;
}

export interface PluginCall {
  args: CniArgs;
  stdin: string;
}

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

function need(v: string | undefined, name: string, why: string): string {
  if (!v) throw new CniError(CNI_ERROR.INVALID_ENV, `${name} is not set: ${why}`);
  return v;
}

/** Runs one CNI command; resolves with what to print on stdout (undefined: print nothing). */
export async function runPlugin(call: PluginCall): Promise<object | undefined> {
  const { args } = call;
  if (args.command === "VERSION") return versionResult(call.stdin);
  const conf = parseNetConf(call.stdin, { anyVersion: args.command === "DEL" });
  const cid = need(args.containerId, "CNI_CONTAINERID", "the runtime must name the container");
  // The id names a file in dataDir: only the characters the spec allows, never a path.
  if (!CONTAINER_ID.test(cid))
    throw new CniError(
      CNI_ERROR.INVALID_ENV,
      `CNI_CONTAINERID "${cid}" may only hold letters, digits, '_', '.' and '-'`,
    );
  need(args.ifName, "CNI_IFNAME", "the runtime must name the pod's interface");
  if (args.path.length === 0)
    throw new CniError(CNI_ERROR.INVALID_ENV, "CNI_PATH is not set: the runtime must say where the plugins are");
  const kept = join(conf.dataDir, cid);
  switch (args.command) {
    case "ADD": {
      need(args.netns, "CNI_NETNS", "ADD needs the pod's network namespace");
      const env = await readSubnetEnv(conf.subnetFile);
      const d = delegateConfig(conf, env);
      // Kept before the delegate runs, so that a DEL after a failed or interrupted ADD still finds it.
      await writeFileAtomic(kept, JSON.stringify(d), { mode: 0o600, dirMode: 0o700 });
      try {
        return (await execPlugin(d.type as string, d, args)) as object;
      } catch (error) {
        // The reference plugins release what they took when ADD fails; a DEL makes sure. Only
        // when it worked (or the delegate refused the version, so did nothing) is nothing left;
        // else the kept config stays, for the runtime's own DEL to try again.
        const refused = error instanceof CniError && error.cniCode === CNI_ERROR.INCOMPATIBLE_VERSION;
        const released =
          refused ||
          (await execPlugin(d.type as string, d, { ...args, command: "DEL" }).then(
            () => true,
            () => false,
          ));
        if (released) await rm(kept, { force: true });
        throw error;
      }
    }
    case "DEL": {
      const d = await readKept(kept).catch(async (e: unknown) => {
        if (!(e instanceof CniError && e.cniCode === CNI_ERROR.DECODE_FAILURE)) throw e;
        // As flannel's plugin: a DEL failing forever leaves the pod Terminating, and nothing
        // could ever run this file's delegate. Said on stderr, which runtimes log.
        process.stderr.write(
          `weft cni: ${e.message}; removed it: the pod's interface and address, if any, are left to remove by hand\n`,
        );
        await rm(kept, { force: true });
        return undefined;
      });
      // Nothing kept: never added, or already deleted. The spec asks DEL to succeed then.
      if (!d) return undefined;
      if (conf.prevResult) d.prevResult = conf.prevResult;
      await execPlugin(d.type as string, d, args);
      await rm(kept, { force: true });
      return undefined;
    }
    case "CHECK": {
      const v = (SUPPORTED_VERSIONS as readonly string[]).indexOf(conf.cniVersion || DEFAULT_VERSION);
      if (v < SUPPORTED_VERSIONS.indexOf("0.4.0"))
        throw new CniError(CNI_ERROR.INCOMPATIBLE_VERSION, "CHECK needs cniVersion 0.4.0 or later");
      need(args.netns, "CNI_NETNS", "CHECK needs the pod's network namespace");
      if (!conf.prevResult) throw new CniError(CNI_ERROR.INVALID_CONFIG, "CHECK needs prevResult: the result of ADD");
      const d = await readKept(kept);
      if (!d)
        throw new CniError(
          CNI_ERROR.UNKNOWN_CONTAINER,
          `no pod ${cid} was added on this network (nothing kept in ${conf.dataDir})`,
        );
      checkAddressesInSubnet(conf.prevResult, await readSubnetEnv(conf.subnetFile), conf.subnetFile);
      await execPlugin(d.type as string, { ...d, cniVersion: conf.cniVersion, prevResult: conf.prevResult }, args);
      return undefined;
    }
  }
}

function versionResult(stdin: string): object {
  let asked: unknown;
  try {
    asked = stdin.trim() ? (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion : undefined;
  } catch {
    asked = undefined;
  }
  const cniVersion =
    typeof asked === "string" && (SUPPORTED_VERSIONS as readonly string[]).includes(asked)
      ? asked
      : SUPPORTED_VERSIONS.at(-1)!;
  return { cniVersion, supportedVersions: [...SUPPORTED_VERSIONS] };
}

async function readSubnetEnv(path: string): Promise<SubnetEnv> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") {
      // Transient by nature: the agent writes it once it holds a lease. The runtime retries.
      throw new CniError(
        CNI_ERROR.TRY_AGAIN_LATER,
        `subnet file ${path} does not exist yet: the weft (or flannel) agent on this node has not leased a subnet`,
        "the agent writes it once it is ready (/readyz); check that it runs",
      );
    }
    throw new CniError(CNI_ERROR.IO_FAILURE, `cannot read subnet file ${path}: ${(e as Error).message}`);
  }
  return parseSubnetEnvFile(text, path);
}

async function readKept(path: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CniError(CNI_ERROR.IO_FAILURE, `cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const d = JSON.parse(text) as Record<string, unknown>;
    if (typeof d.type === "string") return d;
  } catch {
    // handled below
  }
  throw new CniError(
    CNI_ERROR.DECODE_FAILURE,
    `${path} (the delegate config kept at ADD) is damaged`,
    "remove the pod's interface by hand and delete that file",
  );
}

/** CHECK: after a lease change a pod's address may no longer belong to this node. */
function checkAddressesInSubnet(prevResult: Record<string, unknown>, env: SubnetEnv, path: string): void {
  const ips = (prevResult.ips as Array<{ address?: unknown }> | undefined) ?? [];
  for (const ip of ips) {
    const c = typeof ip.address === "string" ? parseCidr(ip.address) : undefined;
    if (!c) continue;
    const fam = env.families.find((f) => f.subnet.family === c.family);
    const addr = { ...c, len: c.family === 4 ? 32 : 128 };
    if (fam && !cidrContains(fam.subnet, addr)) {
      throw new CniError(
        CNI_ERROR.ADDRESS_OUTSIDE_SUBNET,
        `pod address ${ip.address} is outside this node's subnet ${networkOf(fam.subnet)} (${path}): the node's lease changed; recreate the pod`,
      );
    }
  }
}
