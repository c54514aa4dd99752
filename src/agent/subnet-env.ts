// /run/flannel/subnet.env, written exactly as flanneld writes it, so that the flannel CNI plugin
// works unchanged: per enabled family (IPv4 first) the network and the first usable address of this
// node's subnet with its prefix length, then the MTU pods must use and whether ip-masq is on;
// replaced atomically. IPv6 addresses are written as Go writes them (src/net/ipv6.ts).
import { writeFileAtomic } from "../fs/atomic-write.js";
import { errorMessage, WeftError } from "../errors.js";
import { formatIpv4, formatPrefix, parseIpv4, parsePrefix, prefixMask, type Ipv4Prefix } from "../net/ipv4.js";
import { formatIpv6, formatPrefix6, parseIpv6, parsePrefix6, prefixMask6, type Ipv6Prefix } from "../net/ipv6.js";
import { DEFAULT_SUBNET_FILE } from "../paths.js";

export interface SubnetEnv {
  /** IPv4 network and this node's subnet; absent when IPv4 is off. */
  readonly v4?: { readonly network: Ipv4Prefix; readonly subnet: Ipv4Prefix };
  /** IPv6 network and this node's subnet; absent when IPv6 is off. */
  readonly v6?: { readonly network: Ipv6Prefix; readonly subnet: Ipv6Prefix };
  readonly mtu: number;
  readonly ipMasq: boolean;
}

export function subnetEnv(env: SubnetEnv): string {
  const lines: string[] = [];
  if (env.v4)
    lines.push(
      `FLANNEL_NETWORK=${formatPrefix(env.v4.network)}`,
      `FLANNEL_SUBNET=${formatIpv4(env.v4.subnet.addr + 1)}/${env.v4.subnet.len}`,
    );
  if (env.v6)
    lines.push(
      `FLANNEL_IPV6_NETWORK=${formatPrefix6(env.v6.network)}`,
      `FLANNEL_IPV6_SUBNET=${formatIpv6(env.v6.subnet.addr + 1n)}/${env.v6.subnet.len}`,
    );
  return [...lines, `FLANNEL_MTU=${env.mtu}`, `FLANNEL_IPMASQ=${env.ipMasq}`, ""].join("\n");
}

export async function writeSubnetEnv(path: string, env: SubnetEnv): Promise<void> {
  await writeFileAtomic(path, subnetEnv(env)).catch((cause) => {
    throw subnetFileError(path, "write it", cause);
  });
}

/** --subnet-file could not be used (read, its directory made, written): the path, why, and what to do. */
export function subnetFileError(path: string, what: string, cause: unknown): WeftError {
  return new WeftError(
    "AGENT_SUBNET_FILE_UNUSABLE",
    `--subnet-file ${path}: cannot ${what} (${errorMessage(cause)}); ${subnetFileAdvice((cause as NodeJS.ErrnoException).code)}`,
    { cause },
  );
}

/** What to do about an errno: a later publish's full or read-only disk is no wrong path. */
function subnetFileAdvice(errno: string | undefined): string {
  const flannels = `(flannel's is ${DEFAULT_SUBNET_FILE})`;
  switch (errno) {
    case "EISDIR":
    case "ENOTDIR":
    case "EEXIST":
      return `pass the path of a file, not a directory, in a directory weft may create and write ${flannels}`;
    case "ENOSPC":
    case "EDQUOT":
      return "its file system is full: free space on it";
    case "EROFS":
      return `its file system is read-only: mount it read-write, or pass a path on one that is ${flannels}`;
    case "EACCES":
    case "EPERM":
      return `run weft as root, and pass a path in a directory it may create and write (not an immutable one, chattr +i, which refuses root too; flannel's is ${DEFAULT_SUBNET_FILE})`;
    default:
      return `fix the cause, or pass another path ${flannels}`;
  }
}

/** Reads a subnet.env back (as the flannel CNI plugin does). */
export function parseSubnetEnv(text: string): SubnetEnv {
  const vars = new Map(
    text
      .split("\n")
      .filter((l) => l.includes("="))
      .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
  );
  const need = (k: string) => {
    const v = vars.get(k);
    if (v === undefined) throw new WeftError("AGENT_SUBNET_ENV_INVALID", `subnet.env has no ${k}`);
    return v;
  };
  if (!vars.has("FLANNEL_NETWORK") && !vars.has("FLANNEL_IPV6_NETWORK"))
    throw new WeftError("AGENT_SUBNET_ENV_INVALID", "subnet.env has neither FLANNEL_NETWORK nor FLANNEL_IPV6_NETWORK");
  const hostPrefix = (k: string) => {
    const [addr, len] = need(k).split("/");
    return { addr, len: Number(len) };
  };
  const s4 = vars.has("FLANNEL_NETWORK") ? hostPrefix("FLANNEL_SUBNET") : undefined;
  const s6 = vars.has("FLANNEL_IPV6_NETWORK") ? hostPrefix("FLANNEL_IPV6_SUBNET") : undefined;
  return {
    ...(s4 && {
      v4: {
        network: parsePrefix(need("FLANNEL_NETWORK")),
        subnet: { addr: (parseIpv4(s4.addr) & prefixMask(s4.len)) >>> 0, len: s4.len },
      },
    }),
    ...(s6 && {
      v6: {
        network: parsePrefix6(need("FLANNEL_IPV6_NETWORK")),
        subnet: { addr: parseIpv6(s6.addr) & prefixMask6(s6.len), len: s6.len },
      },
    }),
    mtu: Number(need("FLANNEL_MTU")),
    ipMasq: need("FLANNEL_IPMASQ") === "true",
  };
}
