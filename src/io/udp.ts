// UDP sockets for the dataplane: bound with SO_REUSEPORT so that each worker owns one socket on
// the same address and port; recvmmsg/sendmmsg move a whole batch per syscall, with the peer's
// address and port in each descriptor's ADDR/PORT. FLAGS bits 0..15 carry a segment size for
// UDP GSO (send) and GRO (receive, when opened with gro).
import { parseIpv4 } from "../net/ipv4.js";
import { FdHandle } from "./fd-handle.js";
import { native } from "./native.js";

export interface UdpOptions {
  /** Local address, "198.18.0.1" or as a number; "0.0.0.0" for any. */
  readonly address: string | number;
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

export class UdpSocket extends FdHandle {
  private constructor(fd: number, readonly port: number) {
    super(fd, "UDP socket");
  }

  /** Binds in the calling thread's network namespace. */
  static open(options: UdpOptions): UdpSocket {
    const addr = typeof options.address === "number" ? options.address : parseIpv4(options.address);
    const { fd, port } = native.udpOpen(addr, options.port, options.reusePort ?? true, options.rcvbuf ?? 0, options.sndbuf ?? 0, options.gro ?? false);
    return new UdpSocket(fd, port);
  }

  /** recvmmsg: fills slots, sets LEN, ADDR, PORT and FLAGS; see NativeIo for the batch contract. */
  recv(buf: Uint8Array, descs: Int32Array, first: number, count: number): number {
    return native.udpRecv(this.fd, buf, descs, first, count) & 0xffff;
  }

  /** Stamps every datagram with its arrival time (SO_TIMESTAMPNS), for recvWithin. */
  enableTimestamps(): void {
    native.udpSetTimestamps(this.fd);
  }

  /**
   * Like recv, and counts the datagrams that waited longer than `maxAgeUs` in the socket's queue
   * (`late`; needs enableTimestamps). With `drop` those are dropped: the `kept` descriptors from
   * `first` on hold the rest, in order.
   */
  recvWithin(buf: Uint8Array, descs: Int32Array, first: number, count: number, maxAgeUs: number, drop: boolean): { kept: number; late: number } {
    const r = native.udpRecv(this.fd, buf, descs, first, count, maxAgeUs, drop);
    return { kept: r & 0xffff, late: r >>> 16 };
  }

  /**
   * Lets a classic BPF program choose, per datagram, which socket of this socket's SO_REUSEPORT
   * group receives it: the program sees the UDP payload and returns a socket index (in the order
   * the sockets were bound). Applies to the whole group.
   */
  setReuseportProgram(program: Int32Array): void {
    native.udpSetReuseportProgram(this.fd, program);
  }

  /** sendmmsg: LEN bytes at OFF to ADDR:PORT per packet. */
  send(buf: Uint8Array, descs: Int32Array, first: number, count: number): number {
    return native.udpSend(this.fd, buf, descs, first, count);
  }
}
