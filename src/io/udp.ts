// UDP sockets for the dataplane: bound with SO_REUSEPORT so that each queue pair owns one socket on
// the same address and port; recvmmsg/sendmmsg move a whole batch per syscall, with the peer's
// address and port in each descriptor's ADDR/PORT. FLAGS bits 0..15 carry a segment size for
// UDP GSO (send) and GRO (receive, when opened with gro). A UdpSocket is the dataplane's
// DatagramBind (batch-io.ts); the control thread opens and owns it, a worker borrows it (lend()).
// An IPv6 socket (an IPv6 address, or "::" for both families) carries IPv6 peers with
// DESC_FLAG_ADDR6: ADDR is the offset of their 16 bytes in the buffer (see native.ts).
/// <reference lib="es2024.sharedmemory" />
import { parseIpv4 } from "../net/ipv4.js";
import { formatIpv6, isIpv6Text } from "../net/ipv6.js";
import type { DatagramBind } from "./batch-io.js";
import { FdHandle } from "./fd-handle.js";
import { atMostMaxBatch, native } from "./native.js";

export interface UdpOptions {
  /**
   * Local address: IPv4 as "198.18.0.1" or a number ("0.0.0.0" for any), IPv6 as "2001:2::1" or a
   * bigint ("::" for any address of either family).
   */
  readonly address: string | number | bigint;
  /** Local port; 0 picks a free one (see UdpSocket.port). */
  readonly port: number;
  /** SO_REUSEPORT, so that several workers bind the same address and port. Default true. */
  readonly reusePort?: boolean;
  /** SO_RCVBUF / SO_SNDBUF in bytes (root may exceed net.core.*mem_max); 0 keeps the default. */
  readonly rcvbuf?: number;
  readonly sndbuf?: number;
  /** UDP_GRO: the kernel may hand over several datagrams as one, segment size in FLAGS. */
  readonly gro?: boolean;
}

/** A socket as plain data, to hand to a worker thread (structured clone); see UdpSocket.borrow. */
export interface LentUdpSocket {
  fd: number;
  port: number;
  family: 4 | 6;
  trains: boolean;
  gsoRefused: Int32Array<SharedArrayBuffer>;
}

/** The socket's shared GSO word: 0 while GSO works, GSO_REFUSED once the kernel refused it, GSO_CLOSED once closed without. */
const GSO_REFUSED = 1;
const GSO_CLOSED = 2;

export class UdpSocket extends FdHandle implements DatagramBind {
  /**
   * send() joins runs of single datagrams of one flow (the same nonzero tag in FLAGS above
   * DESC_FLOW_TAG_SHIFT, which the hot path writes) to one destination, each but the last of the
   * first one's size, into UDP GSO sends ("trains", up to 64 datagrams): the kernel's send path,
   * and a GRO peer's receive path, then run once per train. The datagrams on the wire are the
   * same. Needs UDP GSO (Linux 4.18), so the dataplane turns it on with its offloads. Lent with
   * the socket.
   */
  trains = false;

  private constructor(
    fd: number,
    readonly port: number,
    /** The socket's family: an IPv6 socket bound to "::" also carries IPv4 peers. */
    readonly family: 4 | 6,
    borrowed = false,
    /**
     * GSO_REFUSED once the kernel refused a UDP GSO send on this socket (EIO: an IPsec/xfrm route, or no TX
     * checksum offload before Linux 6.11): it sends single datagrams from then on. Shared memory,
     * so that the owner and every borrower (a restarted worker too) see it.
     */
    private readonly gsoState = new Int32Array(new SharedArrayBuffer(4)),
  ) {
    super(fd, "UDP socket", borrowed);
  }

  /** Whether the kernel refused a UDP GSO send here, so that sends go as single datagrams. */
  get gsoRefused(): boolean {
    return Atomics.load(this.gsoState, 0) === GSO_REFUSED;
  }

  /**
   * Resolves true when the kernel refuses a UDP GSO send on this socket (at once if it did), false
   * once its owner closes it: a wait left pending would keep whoever waits alive for good.
   */
  async whenGsoRefused(): Promise<boolean> {
    const wait = Atomics.waitAsync(this.gsoState, 0, 0);
    if (wait.async) await wait.value;
    return this.gsoRefused;
  }

  override close(): void {
    if (!this.closed && !this.borrowed) {
      Atomics.compareExchange(this.gsoState, 0, 0, GSO_CLOSED);
      Atomics.notify(this.gsoState, 0);
    }
    super.close();
  }

  /** This socket as plain data for another thread, which borrows it; this handle stays the owner. */
  lend(): LentUdpSocket {
    return { fd: this.fd, port: this.port, family: this.family, trains: this.trains, gsoRefused: this.gsoState };
  }

  /** The socket a lender handed over: usable until its owner closes it; close() leaves the fd open. */
  static borrow(lent: LentUdpSocket): UdpSocket {
    const socket = new UdpSocket(lent.fd, lent.port, lent.family, true, lent.gsoRefused);
    socket.trains = lent.trains;
    return socket;
  }

  /** Binds in the calling thread's network namespace. */
  static open(options: UdpOptions): UdpSocket {
    const a = options.address;
    const addr = typeof a === "bigint" ? formatIpv6(a) : typeof a === "number" ? a : isIpv6Text(a) ? a : parseIpv4(a);
    const { fd, port } = native.udpOpen(
      addr,
      options.port,
      options.reusePort ?? true,
      options.rcvbuf ?? 0,
      options.sndbuf ?? 0,
      options.gro ?? false,
    );
    return new UdpSocket(fd, port, typeof addr === "string" ? 6 : 4);
  }

  /**
   * recvmmsg: fills slots, sets LEN, ADDR, PORT and FLAGS. Returns kept | late << 16, plus
   * lateDatagrams * 2^32, where `late` counts the receives that waited longer than `maxAgeUs` in the
   * socket's queue (needs enableTimestamps; 0: no limit, late is 0) and lateDatagrams the datagrams
   * in them (a GRO receive holds several); with `drop` those are dropped and the `kept` descriptors
   * from `first` on hold the rest, in order. See DatagramBind.
   */
  recv(buf: Uint8Array, descs: Int32Array, first: number, count: number, maxAgeUs = 0, drop = false): number {
    return native.udpRecv(this.fd, buf, descs, first, atMostMaxBatch(count), maxAgeUs, drop);
  }

  /** Stamps every datagram with its arrival time (SO_TIMESTAMPNS), for recv's maxAgeUs. */
  enableTimestamps(): void {
    native.udpSetTimestamps(this.fd);
  }

  /**
   * Lets a classic BPF program choose, per datagram, which socket of this socket's SO_REUSEPORT
   * group receives it: the program sees the UDP payload and returns a socket index (in the order
   * the sockets were bound). Applies to the whole group.
   */
  setReuseportProgram(program: Int32Array): void {
    native.udpSetReuseportProgram(this.fd, program);
  }

  /**
   * sendmmsg: LEN bytes at OFF to ADDR:PORT per packet (FLAGS' segment size > 0: UDP GSO segments of
   * that size; DESC_FLAG_ADDR6: ADDR is the offset of an IPv6 address, for IPv6 sockets), single
   * datagrams of one flow tag joined into trains when `trains` is on. Returns a batch result: the
   * descriptors done (batchDone), of which batchFailed were lost to messages the kernel refused
   * (no route, a netfilter drop, a broadcast), with the first one's errno (batchErrno).
   * Once the kernel refuses a GSO send (gsoRefused), segments and trains go as single datagrams.
   * The result keeps UDP_SEND_GSO_TOO_BIG: a GSO send refused as larger than the path's MTU went
   * as single datagrams, and will again on the next batch to that path (the caller counts it).
   */
  send(buf: Uint8Array, descs: Int32Array, first: number, count: number): number {
    const r = native.udpSend(this.fd, buf, descs, first, atMostMaxBatch(count), this.trains, !this.gsoRefused);
    // Not `r & ~flag`: bitwise operators cut the errno above 2^32.
    if (!(r & native.UDP_SEND_GSO_REFUSED)) return r;
    Atomics.store(this.gsoState, 0, GSO_REFUSED);
    Atomics.notify(this.gsoState, 0);
    return r - native.UDP_SEND_GSO_REFUSED;
  }
}
