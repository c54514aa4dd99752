// What the I/O benchmark measures and the namespace it measures in: shared by run.ts, which
// prepares the namespace, and cases.ts, which runs inside it.

export const BATCH_SIZES = [1, 16, 64, 256] as const;
/** Each mode of a case runs REPEATS slices of SLICE_MS (interleaved with the other modes). */
export const REPEATS = 5;
export const SLICE_MS = 200;
/** Packet cap per slice: every loop is bounded in time and count. */
export const MAX_PACKETS = 1_000_000;
/** UDP payload bytes; the TUN case sends IPv4 ICMP packets of 20 + this many bytes. */
export const PAYLOAD_BYTES = 64;

export const SETUP = {
  /** TUN device, created persistent by run.ts so that cases.ts only attaches. */
  tun: "wbench0",
  tunLocal: "198.19.0.1",
  tunPeer: "198.19.0.2",
  /** Both UDP addresses sit on the namespace's loopback device. */
  udpA: "198.18.0.1",
  udpB: "198.18.0.2",
} as const;

/** batch: one call per batch; single: one call (and syscall) per packet; dgram: node:dgram. */
export type Mode = "batch" | "single" | "dgram";

export interface CaseResult {
  name: string;
  mode: Mode;
  batch: number;
  packets: number;
  lost: number;
  /** Median slice: packets per second (wall clock) and CPU time of the process per packet. */
  pps: number;
  cpuNsPerPacket: number;
}
