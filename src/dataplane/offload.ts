// Deciding at start whether the userspace dataplane runs with segmentation offloads, and opening
// its TUN queues and sockets accordingly. Offloads need three kernel features together: TUN vnet
// headers with TUNSETOFFLOAD (TSO super-packets in), UDP_SEGMENT (GSO sends out) and UDP_GRO
// (batched receives). UDP_GRO came with Linux 5.0, after UDP_SEGMENT (4.18), so a socket that
// accepts UDP_GRO proves both. Whatever is missing turns offloads off as a whole, with the reason
// kept for logs and counters; the wire format is the same either way.
import { errorMessage } from "../errors.js";
import { TUN_OFFLOAD, TunQueue } from "../io/tun.js";
import { UdpSocket, type UdpOptions } from "../io/udp.js";

export interface OffloadState {
  enabled: boolean;
  /** TUNSETOFFLOAD flags in force: CSUM, TSO4, TSO6, and USO4/USO6 where the kernel has them. */
  tun: string[];
  udpGro: boolean;
  /**
   * Sockets on which the kernel refused a UDP GSO send (EIO: an IPsec/xfrm route, or a device
   * without TX checksum offload before Linux 6.11), which send single datagrams since.
   */
  udpGsoRefused: number;
  /** Why offloads are off (absent when on). */
  reason?: string;
}

const TSO = TUN_OFFLOAD.CSUM | TUN_OFFLOAD.TSO4 | TUN_OFFLOAD.TSO6;
const USO = TUN_OFFLOAD.USO4 | TUN_OFFLOAD.USO6;

/** Opens the first socket of the queue group with UDP_GRO if `want`, telling whether it took. */
export function openFirstSocket(
  options: UdpOptions,
  want: boolean,
): { socket: UdpSocket; gro: boolean; reason?: string } {
  if (!want) return { socket: UdpSocket.open(options), gro: false, reason: "disabled by the offloads option" };
  try {
    return { socket: UdpSocket.open({ ...options, gro: true }), gro: true };
  } catch (error) {
    return {
      socket: UdpSocket.open(options),
      gro: false,
      reason: `UDP_GRO refused (${errorMessage(error)}); UDP GSO/GRO need Linux 5.0`,
    };
  }
}

/**
 * Opens `count` queues of TUN device `name`: with vnet headers and TSO (plus USO when the kernel
 * has it) when `want`, else — or when the kernel refuses — plain, as without offloads.
 */
export function openTunQueues(
  name: string,
  count: number,
  want: boolean,
): { tuns: TunQueue[]; flags: string[]; reason?: string } {
  if (!want) return { tuns: TunQueue.openQueues(name, count), flags: [] };
  let tuns: TunQueue[];
  try {
    tuns = TunQueue.openQueues(name, count, { vnetHdr: true });
  } catch (error) {
    return {
      tuns: TunQueue.openQueues(name, count),
      flags: [],
      reason: `TUN vnet headers refused (${errorMessage(error)})`,
    };
  }
  const refused = (flags: number): string | undefined => {
    try {
      for (const t of tuns) t.setOffload(flags);
      return undefined;
    } catch (error) {
      return errorMessage(error);
    }
  };
  if (refused(TSO | USO) === undefined) return { tuns, flags: ["CSUM", "TSO4", "TSO6", "USO4", "USO6"] };
  const why = refused(TSO); // kernels before 6.2 have no USO
  if (why === undefined) return { tuns, flags: ["CSUM", "TSO4", "TSO6"] };
  for (const t of tuns) t.close();
  return { tuns: TunQueue.openQueues(name, count), flags: [], reason: `TUNSETOFFLOAD refused (${why})` };
}
