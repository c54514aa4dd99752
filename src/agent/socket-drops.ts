// Datagrams the kernel dropped on this process's own UDP sockets before the dataplane could read
// them (a full receive buffer, a bad checksum): the `drops` column of /proc/net/udp for the
// sockets this process holds on the dataplanes' ports. Read from /proc on each scrape, so the
// native addon needs no change and the packet path does no extra work.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

export interface SocketDrops {
  /** Sockets of this process bound to the ports. */
  sockets: number;
  /** Sum of their kernel drop counters. */
  drops: number;
  /**
   * The same by address family of the dataplane. Its sockets' counts go when it is replaced: the
   * agent adds those of each family's stopped dataplanes, so that neither falls.
   */
  families: Array<{ family: 4 | 6; sockets: number; drops: number }>;
}

/** One running dataplane's sockets: its family, their port, and their own family (6: /proc/net/udp6). */
export interface DataplanePort {
  family: 4 | 6;
  port: number;
  socketFamily: 4 | 6;
}

/** Inodes of the sockets this process holds. */
function ownSocketInodes(): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

/** Parses /proc/net/udp text: local port, inode and drops per socket. */
export function parseProcNetUdp(text: string): Array<{ port: number; inode: string; drops: number }> {
  return text
    .split("\n")
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length >= 13)
    .map((f) => ({ port: parseInt(f[1].split(":")[1], 16), inode: f[9], drops: Number(f[12]) }));
}

export function udpSocketDrops(ports: readonly DataplanePort[]): SocketDrops {
  const inodes = ownSocketInodes();
  const families = ports.map(({ family }) => ({ family, sockets: 0, drops: 0 }));
  for (const [table, socketFamily] of [
    ["/proc/self/net/udp", 4],
    ["/proc/self/net/udp6", 6],
  ] as const) {
    let text: string;
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue; // no IPv6 in this kernel
    }
    for (const s of parseProcNetUdp(text)) {
      // Both families may hold one port number, one on IPv4 sockets and one on IPv6 sockets.
      const i = ports.findIndex((p) => p.port === s.port && p.socketFamily === socketFamily);
      if (i < 0 || !inodes.has(s.inode)) continue;
      families[i].sockets++;
      families[i].drops += s.drops;
    }
  }
  return withSums(families);
}

/** SocketDrops of its families' counts. */
export function withSums(families: SocketDrops["families"]): SocketDrops {
  const sum = (pick: (f: SocketDrops["families"][number]) => number) => families.reduce((n, f) => n + pick(f), 0);
  return { sockets: sum((f) => f.sockets), drops: sum((f) => f.drops), families };
}
