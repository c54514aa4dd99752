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

export function udpSocketDrops(ports: ReadonlySet<number>): SocketDrops {
  const inodes = ownSocketInodes();
  let sockets = 0;
  let drops = 0;
  for (const table of ["/proc/self/net/udp", "/proc/self/net/udp6"]) {
    let text: string;
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue; // no IPv6 in this kernel
    }
    for (const s of parseProcNetUdp(text)) {
      if (!ports.has(s.port) || !inodes.has(s.inode)) continue;
      sockets++;
      drops += s.drops;
    }
  }
  return { sockets, drops };
}
