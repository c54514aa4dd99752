// Loading weft's Node-API addon (native/, built by `npm install`) and its types. The addon does
// syscalls and buffer bookkeeping only; tun.ts, udp.ts, wait.ts and netns.ts wrap it in handles.
// It loads in worker threads too (Node-API addons are context-aware), so each dataplane worker
// calls it directly on the fds it owns.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { getSystemErrorName } from "node:util";
import { WeftError } from "../errors.js";
import { projectFile } from "../paths.js";

/**
 * A batch call's arguments: packets [first, first+count) of `descs` (8 x i32 per packet, the
 * format of assembly/descriptor.ts) with slots in `buf` — a view over a whole WebAssembly.Memory
 * buffer (shared or not) or a Buffer. Every descriptor is checked against `buf` before any syscall
 * (RangeError). Returns the number of packets done (batchDone): EAGAIN ends a batch early (0 = none
 * ready); an error on the first packet throws, one on a later packet ends the batch and is thrown
 * by the next call, which starts at that packet — except where the packet is lost already, which
 * the result counts instead (batchFailed, batchErrno): a TUN read's (the kernel freed it), and a
 * TUN write's packet or udpSend's message that the kernel refuses (its descriptors are done, and
 * the batch goes on). A write throws only for its arguments and a closed fd or deleted device.
 */
type BatchCall<Extra extends unknown[]> = (
  fd: number,
  buf: Uint8Array,
  descs: Int32Array,
  first: number,
  count: number,
  ...extra: Extra
) => number;

export interface NativeIo {
  /** What this code expects of the addon (ADDON_ABI; addon.cc's kAbiVersion). */
  readonly ABI_VERSION: number;
  readonly DESC_BYTES: number;
  readonly DESC_OFF: number;
  readonly DESC_CAP: number;
  readonly DESC_LEN: number;
  readonly DESC_ADDR: number;
  readonly DESC_PORT: number;
  readonly DESC_FLAGS: number;
  readonly DESC_VERDICT: number;
  readonly DESC_AUX: number;
  readonly HEADROOM: number;
  readonly MAX_BATCH: number;
  /** A batch result's layout (native/src/batch.h; read with batchDone, batchFailed, batchErrno). */
  readonly BATCH_DONE_MASK: number;
  readonly BATCH_FAILED_SHIFT: number;
  readonly BATCH_FAILED_MASK: number;
  readonly BATCH_ERRNO_SHIFT: number;
  /** FLAGS bits holding a UDP GSO/GRO segment size (0 = a single datagram). */
  readonly FLAGS_SEGMENT_MASK: number;
  /** FLAGS bit: ADDR is the offset of a 16-byte IPv6 address (assembly/descriptor.ts). */
  readonly DESC_FLAG_ADDR6: number;
  /** FLAGS bits from here up: a single datagram's flow tag (assembly/descriptor.ts); trains join one tag. */
  readonly DESC_FLOW_TAG_SHIFT: number;
  /** Size of the virtio_net_hdr in front of OFF on TUN queues with a vnet header. */
  readonly VNET_HDR_BYTES: 12;
  readonly TUN_F_CSUM: number;
  readonly TUN_F_TSO4: number;
  readonly TUN_F_TSO6: number;
  readonly TUN_F_USO4: number;
  readonly TUN_F_USO6: number;
  /** udpSend's result bit: the kernel refused a UDP GSO send (EIO); pass gso false from now on. */
  readonly UDP_SEND_GSO_REFUSED: number;
  /** udpSend's result bit: the kernel refused a UDP GSO send as too big for the path (EINVAL, EMSGSIZE). */
  readonly UDP_SEND_GSO_TOO_BIG: number;
  readonly WAIT_WOKEN: number;
  readonly WAIT_SPUN: number;
  readonly WAIT_SLEPT: number;
  readonly WAIT_MAX_FDS: number;

  readonly HUGE_PAGE_BYTES: number;

  closeFd(fd: number): void;
  /**
   * madvise(MADV_HUGEPAGE) over the whole 2 MiB pages inside [offset, offset + length) of `buf` (a
   * view over a whole Wasm memory), and with `collapse` MADV_COLLAPSE too (best effort: a failure
   * comes back as collapseErrno). Returns the advised range (bytes 0: no whole huge page inside)
   * and its virtual address, to find it in /proc/self/smaps. Throws when the kernel refuses the
   * advice (no THP).
   */
  memoryAdviseHugePages(
    buf: Uint8Array,
    offset: number,
    length: number,
    collapse: boolean,
  ): { offset: number; bytes: number; address: number; collapseErrno?: number };
  /** Moves the calling thread into the namespace at `path`; returns an fd of the one it left. */
  netnsEnter(path: string): number;
  /** Returns the calling thread to the namespace netnsEnter left, and closes that fd. */
  netnsRestore(originalFd: number): void;

  tunOpen(name: string, multiQueue: boolean, vnetHdr: boolean): { fd: number; name: string };
  tunSetOffload(fd: number, flags: number): void;
  /** TUNSETSTEERINGEBPF with a socket-filter program of 8-byte eBPF instructions; see TunQueue.setSteeringProgram. */
  tunSetSteeringProgram(fd: number, program: Uint8Array): void;
  /** Reads fill [OFF, OFF+CAP) and set LEN; with header 12 the vnet header lands in [OFF-12, OFF). */
  tunRead: BatchCall<[header: 0 | 12]>;
  /**
   * Writes [OFF, OFF+LEN), preceded by the vnet header in [OFF-12, OFF) when header is 12; a packet
   * the kernel refuses (not IPv4/IPv6, a bad vnet header) is done and counted (batchFailed).
   */
  tunWrite: BatchCall<[header: 0 | 12]>;

  /** addr: an IPv4 address as a number, or an IPv6 address as text ("::" takes both families). */
  udpOpen(
    addr: number | string,
    port: number,
    reusePort: boolean,
    rcvbuf: number,
    sndbuf: number,
    gro: boolean,
  ): { fd: number; port: number };
  /**
   * Fills [OFF, OFF+CAP) and sets LEN, ADDR, PORT (the sender) and FLAGS (GRO segment size or 0).
   * Returns kept | late << 16, plus lateDatagrams * 2^32: with maxAgeUs > 0 (and udpSetTimestamps),
   * `late` messages waited longer, holding lateDatagrams datagrams (a GRO message counts each of its
   * segments); with `drop` they are dropped and their descriptors moved behind the kept ones. An
   * IPv6 sender's 16 bytes go to the slot's first headroom bytes, ADDR = their offset, FLAGS |=
   * DESC_FLAG_ADDR6, so every OFF must be at least HEADROOM (on an IPv4 socket too).
   */
  udpRecv(
    fd: number,
    buf: Uint8Array,
    descs: Int32Array,
    first: number,
    count: number,
    maxAgeUs?: number,
    drop?: boolean,
  ): number;
  /** SO_TIMESTAMPNS: arrival times for udpRecv's maxAgeUs. */
  udpSetTimestamps(fd: number): void;
  /**
   * Sends [OFF, OFF+LEN) to ADDR:PORT (with DESC_FLAG_ADDR6: to the 16 bytes at offset ADDR, which
   * needs an IPv6 socket); FLAGS' segment size, when not 0, asks for UDP GSO. With `trains`, runs
   * of single datagrams to one destination go as UDP GSO sends (UdpSocket.trains). Returns the
   * descriptors done, | UDP_SEND_GSO_REFUSED when the kernel refused a GSO send with EIO (its
   * datagrams went one by one), | UDP_SEND_GSO_TOO_BIG when it refused one with EINVAL or EMSGSIZE
   * (a segment larger than the path's MTU; its datagrams went one by one, GSO stays on); a message the kernel refuses counts its descriptors as done and
   * failed (batchFailed), and the rest of the batch goes on. With `gso` false (default true) no UDP_SEGMENT is set: a segment
   * size splits the descriptor into datagrams, and no trains are made.
   */
  udpSend: BatchCall<[trains?: boolean, gso?: boolean]>;
  /** SO_ATTACH_REUSEPORT_CBPF: [code, jt, jf, k] per instruction; see UdpSocket.setReuseportProgram. */
  udpSetReuseportProgram(fd: number, program: Int32Array): void;

  /** Blocks the calling thread: see wait.ts, which guards the main thread. */
  wait(fds: readonly number[], wakeFd: number, timeoutMs: number, spinUs?: number): number;
  /** Sets the calling thread's nice value (-20..19). */
  threadNice(nice: number): void;
  wakerOpen(): number;
  wakerSignal(fd: number): void;
  wakerDrain(fd: number): number;
}

/** Where `npm install` puts the compiled addon (worker threads may load it by this path). */
export const addonPath = projectFile("native", "build", "Release", "weft_io.node");

function load(): NativeIo {
  if (!existsSync(addonPath)) {
    throw new WeftError(
      "IO_ADDON_NOT_BUILT",
      `${addonPath} is missing; build it with \`npm install\` (or \`npx node-gyp rebuild --directory native\`)`,
    );
  }
  return checkAddon(createRequire(import.meta.url)(addonPath) as NativeIo);
}

/** The addon version this code is written for: raised with native/src/addon.cc's kAbiVersion. */
export const ADDON_ABI = 3;

/**
 * Refuses an addon built from another checkout (`npm run build` does not rebuild it): one from
 * before the batch layout was exported, say, would read every result as 0 packets done, pod
 * traffic dropped with no error.
 */
export function checkAddon(addon: NativeIo): NativeIo {
  if (addon.ABI_VERSION !== ADDON_ABI) {
    throw new WeftError(
      "IO_ADDON_NOT_BUILT",
      `${addonPath} was built from another checkout (addon version ${addon.ABI_VERSION ?? "none"}, this one needs ${ADDON_ABI}); rebuild it with \`npm install\` (or \`npx node-gyp rebuild --directory native\`)`,
    );
  }
  return addon;
}

export const native: NativeIo = load();

/** A batch call's count cut to what one native call takes (the caller calls again for the rest). */
export function atMostMaxBatch(count: number): number {
  return Math.min(count, native.MAX_BATCH);
}

// The batch result's layout, as the addon defines it (native/src/batch.h): read once here, so
// that a result costs no property lookup.
/** The bits of a batch result that hold the packets done (batchDone). */
export const BATCH_DONE_MASK = native.BATCH_DONE_MASK;
/** A batch result's packets lost to errors: (result >>> BATCH_FAILED_SHIFT) & BATCH_FAILED_MASK. */
export const BATCH_FAILED_SHIFT = native.BATCH_FAILED_SHIFT;
export const BATCH_FAILED_MASK = native.BATCH_FAILED_MASK;
/** A batch result's errno is result / BATCH_ERRNO_UNIT, rounded down (above the 32 bits: no bitwise operator reaches it). */
export const BATCH_ERRNO_UNIT = 2 ** native.BATCH_ERRNO_SHIFT;

/** A batch call's packets done (for a send or TUN write, those it lost to errors included). */
export function batchDone(result: number): number {
  return result & BATCH_DONE_MASK;
}

/** A batch call's packets lost to errors of the kernel's. */
export function batchFailed(result: number): number {
  return (result >>> BATCH_FAILED_SHIFT) & BATCH_FAILED_MASK;
}

/** Linux's EBADFD ("file descriptor in bad state"); Node's os.constants.errno lacks it. */
const EBADFD = 77;

/** An errno's name as the kernel's headers spell it (libuv has no name for EBADFD: a TUN queue whose device was deleted). */
export function errnoName(errno: number): string {
  return errno === EBADFD ? "EBADFD" : getSystemErrorName(-errno);
}

/** The errno of a batch call's first lost packet (0: none lost). */
export function batchErrno(result: number): number {
  return Math.floor(result / BATCH_ERRNO_UNIT);
}
