// The dataplane's I/O seam, as wireguard-go's tun.Device and conn.Bind are: what a worker needs of
// a TUN queue and of a UDP socket, and nothing else. Both move whole batches of packets described
// by descriptors (assembly/descriptor.ts) over slots in one shared buffer — the Wasm memory — so a
// batch costs one native call and no copy. Offload detail stays behind the seam: a queue with a
// vnet header reads and writes it in [OFF-12, OFF), a socket with UDP GRO/GSO reads and takes the
// segment size in FLAGS; the caller only asks the queue whether packets carry the header, because
// the hot path must know. tun.ts and udp.ts implement them; a worker borrows them by their fds.

/**
 * A TUN queue: IP packets from and to the kernel. Reads fill [OFF, OFF+CAP) and set LEN; writes
 * send [OFF, OFF+LEN). Both return the packets done from `first` on (0: none ready / queue full),
 * as a batch result (native.ts: batchDone). A read's error on the first packet throws, one on a
 * later packet ends the batch and counts it in the result (batchFailed, with batchErrno): the
 * kernel lost it already. A packet the kernel refuses to take is done and counted the same way,
 * and the write goes on; a write throws only for its arguments and a closed queue or deleted device.
 * Any count is taken; one call moves at most MAX_BATCH.
 */
export interface PacketQueue {
  /** Whether every packet has a virtio_net_hdr in [OFF-12, OFF) (offloads: TSO super-packets). */
  readonly vnetHdr: boolean;
  read(buf: Uint8Array, descs: Int32Array, first: number, count: number): number;
  write(buf: Uint8Array, descs: Int32Array, first: number, count: number): number;
}

/**
 * A UDP socket: datagrams from and to peers, with the peer's address and port in ADDR/PORT. With
 * UDP GRO a received descriptor may hold several datagrams of FLAGS bytes each, and a sent one
 * with FLAGS > 0 is cut into datagrams of that size (GSO). Counts and errors as PacketQueue's: a
 * message the kernel refuses (a train: its descriptors) is done and counted in batchFailed, and the
 * batch goes on; send() throws only for its arguments and a closed socket (met after the first
 * message: on the next call).
 */
export interface DatagramBind {
  /**
   * Receives into [OFF, OFF+CAP), setting LEN, ADDR, PORT and FLAGS. Returns kept | late << 16,
   * plus lateDatagrams * 2^32: with maxAgeUs > 0 `late` receives waited longer than that in the
   * socket's queue, holding lateDatagrams datagrams (more with GRO); with `drop` they are dropped and
   * the `kept` descriptors from `first` on hold the rest, in order.
   */
  recv(buf: Uint8Array, descs: Int32Array, first: number, count: number, maxAgeUs?: number, drop?: boolean): number;
  /** A batch result, with UDP_SEND_GSO_TOO_BIG set when a GSO send was refused as too big for the path. */
  send(buf: Uint8Array, descs: Int32Array, first: number, count: number): number;
}
