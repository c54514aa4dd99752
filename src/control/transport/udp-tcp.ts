// The real gossip transport: UDP datagrams for probes and gossip, one TCP connection per
// request/response exchange (join, push-pull, reliable sends, ping fallback), both on the same
// port. Stream frames are length-prefixed (4 bytes, big endian) and bounded in size; connections
// are bounded in number and time. Frames arrive here already sealed; this module never looks
// inside them.
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { isIPv6 } from "node:net";
import { connect, createServer, type Server, type Socket } from "node:net";
import type { Logger } from "pino";
import { isWeftError, WeftError } from "../../errors.js";
import { sourceGroup } from "../../net/ipv6.js";
import type { Addr, Transport } from "../runtime.js";

export interface UdpTcpOptions {
  /** Address to bind (e.g. "127.0.0.1", or the underlay address). */
  readonly host: string;
  /** Port for both UDP and TCP; 0 picks a free one (the same number for both). */
  readonly port: number;
  /** Largest datagram accepted for sending (memberlist's UDP buffer, 1400). */
  readonly maxPacketBytes?: number;
  /** Largest stream frame either way; a longer announced length closes the connection. */
  readonly maxStreamBytes?: number;
  /** Concurrent inbound stream connections; at the limit a new one closes the oldest whose request
   *  is not yet whole or whose reply is not yet sent out (see hold() for why the oldest) of the
   *  address holding the most slots, or is closed at once if there is none. */
  readonly maxConnections?: number;
  /** Concurrent inbound stream connections from one address, so that one host cannot take them
   *  all; over it a new one closes that address's oldest as maxConnections does. Per address, not
   *  per IPv6 /64: in clouds and SLAAC LANs all nodes share one /64. */
  readonly maxConnectionsPerSource?: number;
  /** Concurrent inbound stream connections from one IPv6 /64, since one host can add addresses in
   *  its /64 at will; over it a new one closes the /64's oldest. Default half of maxConnections:
   *  larger than one address's share, as all nodes of a cloud subnet share one /64. */
  readonly maxConnectionsPerPrefix?: number;
  /** An inbound connection must deliver its whole request within this time (a deadline, not an
   *  idle timeout: a client trickling a byte at a time is cut off all the same). */
  readonly inboundTimeoutMs?: number;
  /** Bytes all inbound connections together may hold before their request is whole, and so before
   *  gossip can authenticate it, each chunk counted with CHUNK_OVERHEAD_BYTES more; a chunk that
   *  would go over closes the oldest holders first. At least what a frame of maxStreamBytes holds read in 1,400-byte segments (about 1.37 times maxStreamBytes). Default twice maxStreamBytes: 8 MiB, about 8 push-pulls of 1,000 nodes
   *  at their largest (1 MB with 128-byte names and 512-byte meta; 0.2–0.4 MB as usually named). */
  readonly maxPendingBytes?: number;
  /** Where connections closed by those two limits are logged (TRANSPORT_INBOUND_EVICTED, at most
   *  once per EVICTED_LOG_INTERVAL_MS). */
  readonly logger?: Pick<Logger, "warn">;
}

/** Counters of what this transport refused or failed at (frames it drops never reach gossip). */
export type TransportStats = {
  /** Outgoing datagrams over maxPacketBytes, not sent (gossip's maxPacketBytes is set higher than the transport's). */
  oversizePackets: number;
  oversizeStreams: number;
  rejectedConnections: number;
  inboundStreamErrors: number;
  packetSendErrors: number;
  /** Inbound connections closed because the bytes held before requests were whole went over maxPendingBytes. */
  overBudgetStreams: number;
  /** Inbound connections whose request was not yet whole or whose reply was not yet sent out,
   *  closed for a newer one at maxConnections, maxConnectionsPerSource or maxConnectionsPerPrefix. */
  evictedForSlot: number;
};

const LENGTH_BYTES = 4;
/** What a chunk costs held besides its bytes (its Buffer object and its place in the list), charged
 *  against maxPendingBytes: else 1-byte segments on every connection would hold many times the
 *  budget while counting a few bytes. An estimate on the high side. */
export const CHUNK_OVERHEAD_BYTES = 512;
/** A TCP segment's payload across an MTU-1500 network, rounded down. */
const SEGMENT_BYTES = 1_400;

/** What a whole frame of maxStreamBytes holds of maxPendingBytes read one segment at a time. */
function frameHoldCost(maxStreamBytes: number): number {
  const bytes = LENGTH_BYTES + maxStreamBytes;
  return bytes + Math.ceil(bytes / SEGMENT_BYTES) * CHUNK_OVERHEAD_BYTES;
}

/** At most one TRANSPORT_INBOUND_EVICTED line this often: a flood must not flood the log too. */
export const EVICTED_LOG_INTERVAL_MS = 60_000;

/** What to do about a failed bind: a port can be freed, an address that is not local cannot. */
function bindAdvice(err: unknown): string {
  return (err as NodeJS.ErrnoException).code === "EADDRNOTAVAIL"
    ? "the address is not on this host: bind one of its own addresses"
    : "pick another port or free it";
}

export class UdpTcpTransport implements Transport {
  readonly stats: TransportStats = {
    oversizePackets: 0,
    oversizeStreams: 0,
    rejectedConnections: 0,
    inboundStreamErrors: 0,
    packetSendErrors: 0,
    overBudgetStreams: 0,
    evictedForSlot: 0,
  };
  private packetHandler: (from: Addr, frame: Uint8Array) => void = () => {};
  private exchangeHandler: (from: Addr, frame: Uint8Array) => Promise<Uint8Array> = () =>
    Promise.reject(new WeftError("TRANSPORT_CLOSED", "no exchange handler"));
  /** Inbound connections (the limits count these only) and this node's own outbound exchanges,
   *  kept apart so that a burst of our own push-pulls never takes a slot a joining peer needs. */
  private readonly inbound = new Map<Socket, Origin>();
  private readonly outbound = new Set<Socket>();
  private readonly perSource = new Map<string, number>();
  /** By IPv6 /64; an IPv4 address is its own group, bounded by perSource alone. */
  private readonly perGroup = new Map<string, number>();
  /** Bytes each inbound connection holds of a request not yet whole, in order of acceptance. */
  private readonly pending = new Map<Socket, number>();
  private pendingTotal = 0;
  /** Inbound connections whose reply is written but not yet sent out (a client not reading): they
   *  may be closed for a newer connection, as those still sending their request may. */
  private readonly replying = new Set<Socket>();
  private lastEvictedLog = -Infinity;
  private readonly evictedSinceLog = { overBudget: 0, forSlot: 0 };
  private closed = false;

  private constructor(
    readonly local: Addr,
    private readonly udp: UdpSocket,
    private readonly tcp: Server,
    private readonly maxPacketBytes: number,
    private readonly maxStreamBytes: number,
    private readonly maxConnections: number,
    private readonly maxConnectionsPerSource: number,
    private readonly maxConnectionsPerPrefix: number,
    private readonly inboundTimeoutMs: number,
    private readonly maxPendingBytes: number,
    private readonly logger: Pick<Logger, "warn"> | undefined,
  ) {
    udp.on("message", (msg, rinfo) => this.packetHandler({ host: rinfo.address, port: rinfo.port }, msg));
    udp.on("error", () => this.stats.packetSendErrors++);
    tcp.on("connection", (sock) => this.accept(sock));
    // A failed accept (EMFILE: out of file descriptors) is emitted on the server; unheard, it would
    // take the agent down. The connection is lost (its peer retries); the server keeps listening.
    tcp.on("error", () => this.stats.inboundStreamErrors++);
  }

  /** Binds UDP and TCP on one port (with port 0: a free one, retried if TCP finds it taken). */
  static async open(opts: UdpTcpOptions): Promise<UdpTcpTransport> {
    const maxStreamBytes = opts.maxStreamBytes ?? 4 * 1024 * 1024;
    const maxPendingBytes = opts.maxPendingBytes ?? 2 * maxStreamBytes;
    // No budget holds a frame sent a byte per segment; this one holds the largest frame read a
    // segment at a time, each chunk with its overhead, as from a peer across the network.
    const frameCost = frameHoldCost(maxStreamBytes);
    if (maxPendingBytes < frameCost)
      throw new WeftError(
        "GOSSIP_CONFIG_INVALID",
        `maxPendingBytes ${maxPendingBytes} cannot hold a frame of maxStreamBytes ${maxStreamBytes} read in ${SEGMENT_BYTES}-byte segments (${frameCost} bytes with each chunk's ${CHUNK_OVERHEAD_BYTES}-byte overhead): such a frame could never arrive; raise it to at least ${frameCost}`,
      );
    const attempts = opts.port === 0 ? 10 : 1;
    let lastError: unknown;
    for (let i = 0; i < attempts; i++) {
      const udp = createSocket(isIPv6(opts.host) ? "udp6" : "udp4");
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once("error", reject);
          udp.bind(opts.port, opts.host, () => {
            udp.off("error", reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        throw new WeftError(
          "TRANSPORT_BIND_FAILED",
          `UDP ${opts.host}:${opts.port}: ${String(err)}; ${bindAdvice(err)}`,
        );
      }
      const port = udp.address().port;
      const tcp = createServer();
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once("error", reject);
          tcp.listen(port, opts.host, () => {
            tcp.off("error", reject);
            resolve();
          });
        });
        return new UdpTcpTransport(
          { host: opts.host, port },
          udp,
          tcp,
          opts.maxPacketBytes ?? 1400,
          maxStreamBytes,
          opts.maxConnections ?? 64,
          opts.maxConnectionsPerSource ?? 8,
          opts.maxConnectionsPerPrefix ?? Math.ceil((opts.maxConnections ?? 64) / 2),
          opts.inboundTimeoutMs ?? 10_000,
          maxPendingBytes,
          opts.logger,
        );
      } catch (err) {
        lastError = err;
        udp.close();
        tcp.close();
      }
    }
    throw new WeftError(
      "TRANSPORT_BIND_FAILED",
      `TCP ${opts.host}:${opts.port}: ${String(lastError)}; ${bindAdvice(lastError)}`,
    );
  }

  sendPacket(to: Addr, frame: Uint8Array): void {
    if (this.closed) return;
    // Counted, not thrown: this runs from gossip timers, where a throw would take the agent down.
    if (frame.length > this.maxPacketBytes) {
      this.stats.oversizePackets++;
      return;
    }
    try {
      // dgram throws at once for what it can check itself (a port out of range, a bad address).
      this.udp.send(frame, to.port, to.host, (err) => {
        if (err) this.stats.packetSendErrors++;
      });
    } catch {
      this.stats.packetSendErrors++;
    }
  }

  exchange(to: Addr, frame: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    if (this.closed) return Promise.reject(new WeftError("TRANSPORT_CLOSED", "transport closed"));
    return new Promise((resolve, reject) => {
      const sock = connect({ host: to.host, port: to.port });
      this.outbound.add(sock);
      const timer = setTimeout(
        () => fail(new WeftError("TRANSPORT_TIMEOUT", `no answer from ${to.host}:${to.port} in ${timeoutMs} ms`)),
        timeoutMs,
      );
      const finish = (): void => {
        clearTimeout(timer);
        this.outbound.delete(sock);
        sock.destroy();
      };
      const fail = (err: Error): void => {
        finish();
        reject(err);
      };
      sock.once("error", (err) =>
        fail(new WeftError("TRANSPORT_CONNECT_FAILED", `${to.host}:${to.port}: ${err.message}`)),
      );
      sock.once("connect", () => sock.write(lengthPrefixed(frame)));
      readFrame(sock, this.maxStreamBytes).then((reply) => {
        finish();
        resolve(reply);
      }, fail);
    });
  }

  /** Bytes inbound connections now hold of requests not yet whole, with each chunk's overhead (never over maxPendingBytes). */
  get pendingBytes(): number {
    return this.pendingTotal;
  }

  onPacket(handler: (from: Addr, frame: Uint8Array) => void): void {
    this.packetHandler = handler;
  }

  onExchange(handler: (from: Addr, frame: Uint8Array) => Promise<Uint8Array>): void {
    this.exchangeHandler = handler;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const sock of [...this.inbound.keys(), ...this.outbound]) sock.destroy();
    this.inbound.clear();
    this.outbound.clear();
    this.pending.clear();
    this.replying.clear();
    this.pendingTotal = 0;
    await Promise.all([
      new Promise<void>((resolve) => this.udp.close(() => resolve())),
      new Promise<void>((resolve) => this.tcp.close(() => resolve())),
    ]);
  }

  private accept(sock: Socket): void {
    const source = sock.remoteAddress ?? "";
    const group = sourceGroup(source);
    // Over an address's (or its /64's) share its own oldest goes, not the newcomer, so that stalled
    // connections cannot lock out that address's real requests. At the limit, the oldest of the
    // address holding the most slots: a flood's connections crowd its addresses while a peer's
    // exchange is one connection. By address, not /64: where all peers share one /64 it would hold
    // more than a flood's /64s of one each, and a peer's connection would go first. Among equals, a
    // /64 holding its whole share goes first: a host with two /64s of one connection an address
    // fills every slot with each at its cap. Peers sharing one /64 (one exchange each) reach it too
    // when as many exchange at once as its cap (32 of the default 64 slots: a join wave in a large
    // cluster): their oldest go first then, bounded and arguably fair. Then oldest first (see evictable()).
    const overShare = (this.perSource.get(source) ?? 0) >= this.maxConnectionsPerSource;
    const overGroup = group !== source && (this.perGroup.get(group) ?? 0) >= this.maxConnectionsPerPrefix;
    const full = this.inbound.size >= this.maxConnections;
    const victim = overShare
      ? this.evictable((o) => Number(o.source === source))
      : overGroup
        ? this.evictable((o) => Number(o.group === group))
        : full
          ? this.evictable(
              (o) =>
                2 * (this.perSource.get(o.source) ?? 0) +
                Number(o.group !== o.source && (this.perGroup.get(o.group) ?? 0) >= this.maxConnectionsPerPrefix),
            )
          : undefined;
    if (this.closed || ((overShare || overGroup || full) && !victim)) {
      this.stats.rejectedConnections++;
      sock.destroy();
      return;
    }
    if (victim) this.evict(victim, "forSlot");
    this.inbound.set(sock, { source, group });
    this.pending.set(sock, 0);
    // Read again: the eviction may have been of a connection from this same source.
    count(this.perSource, source, 1);
    count(this.perGroup, group, 1);
    const deadline = setTimeout(
      () => sock.destroy(new WeftError("TRANSPORT_TIMEOUT", "inbound request too slow")),
      this.inboundTimeoutMs,
    ).unref();
    sock.on("error", () => {});
    sock.once("close", () => {
      clearTimeout(deadline);
      this.forget(sock);
    });
    const from = { host: sock.remoteAddress ?? "", port: sock.remotePort ?? 0 };
    readFrame(sock, this.maxStreamBytes, (n) => this.hold(sock, n))
      .then((request) => {
        this.release(sock);
        return this.exchangeHandler(from, request);
      })
      .then(
        (reply) => {
          if (sock.destroyed) return;
          // Closed once the reply is out rather than when the client closes: a captured request
          // replayed (it authenticates; nothing in the wire says when it was sent) would otherwise
          // hold its slot to the deadline, and 64 of them every slot. Written and then closed, not
          // end(): a shutdown pending (libuv's waits for the socket to be writable) makes the reset
          // of an eviction fail, and Node then drops the handle without closing it, leaking the fd.
          // Closed once the reply is in the kernel, it still goes out whole, FIN after it: the
          // request was read whole and a client sends nothing more before the reply.
          this.replying.add(sock);
          sock.write(lengthPrefixed(reply), () => sock.destroy());
        },
        (err: unknown) => {
          if (isWeftError(err, "TRANSPORT_TOO_BIG")) this.stats.oversizeStreams++;
          else if (!isWeftError(err, "TRANSPORT_REFUSED")) this.stats.inboundStreamErrors++; // counted by evict()
          sock.destroy();
        },
      );
  }

  /**
   * Counts a chunk of n more bytes (and its overhead) held by sock before its request is whole; while that puts the total over
   * maxPendingBytes, closes the oldest holders (sock among them, if it is the oldest left). Oldest,
   * not newest (memberlist refuses the newest push-pull over its 128): holders that stall are what
   * a flood without the key is made of, and refusing the newest would hand them every legitimate
   * push-pull until the deadline, at the cost of a few bytes each. Evicting the oldest, a flood
   * must send the whole budget anew while a peer's request is in flight to close it. False when
   * sock was closed.
   */
  private hold(sock: Socket, n: number): boolean {
    const cost = n + CHUNK_OVERHEAD_BYTES;
    this.pending.set(sock, (this.pending.get(sock) ?? 0) + cost);
    this.pendingTotal += cost;
    for (const [s, bytes] of this.pending) {
      if (this.pendingTotal <= this.maxPendingBytes) break;
      if (bytes > 0) this.evict(s, "overBudget");
    }
    return this.pending.has(sock);
  }

  /**
   * The connection to close for a newer one: of those ranked highest by `rank` (0: none of them),
   * the oldest accepted whose request is not yet whole or whose reply is not yet sent out, both
   * kinds together; undefined if there is none (all are being answered, which is brief). By age
   * alone, not request-arriving first: else unread replies (replayed requests) holding all other
   * slots let one connection close a peer's request; oldest first, a flood must open new
   * connections for all the slots while it is in flight.
   */
  private evictable(rank: (from: Origin) => number): Socket | undefined {
    let victim: Socket | undefined;
    let best = 0;
    for (const [s, from] of this.inbound) {
      const r = rank(from);
      if (r > best && (this.pending.has(s) || this.replying.has(s))) {
        best = r;
        victim = s;
      }
    }
    return victim;
  }

  /** Closes an inbound connection whose request is not yet whole or whose reply is not yet out,
   *  counted, and logged at a bounded rate. */
  private evict(sock: Socket, why: "overBudget" | "forSlot"): void {
    const unread = this.replying.has(sock);
    this.forget(sock);
    if (why === "overBudget") this.stats.overBudgetStreams++;
    else this.stats.evictedForSlot++;
    this.evictedSinceLog[why]++;
    // A reply still buffered is dropped with a reset: closed in order, the kernel would keep it,
    // orphaned, sending on to a client that does not read.
    if (unread) sock.resetAndDestroy();
    else sock.destroy(new WeftError("TRANSPORT_REFUSED", `closed (${why}) before its request was whole`));
    if (Date.now() - this.lastEvictedLog < EVICTED_LOG_INTERVAL_MS) return;
    this.lastEvictedLog = Date.now();
    this.logger?.warn(
      {
        code: "TRANSPORT_INBOUND_EVICTED",
        ...this.evictedSinceLog,
        maxPendingBytes: this.maxPendingBytes,
        maxConnections: this.maxConnections,
      },
      "closed the oldest inbound gossip streams whose requests were not yet whole (not yet authenticated) or whose replies were not yet out",
    );
    this.evictedSinceLog.overBudget = 0;
    this.evictedSinceLog.forSlot = 0;
  }

  /** sock's bytes no longer count: its request is whole (gossip authenticates it next) or it closed. */
  private release(sock: Socket): void {
    this.pendingTotal -= this.pending.get(sock) ?? 0;
    this.pending.delete(sock);
  }

  /** sock no longer takes an inbound slot (it closed, or is being closed); idempotent. */
  private forget(sock: Socket): void {
    const from = this.inbound.get(sock);
    if (from === undefined) return;
    this.inbound.delete(sock);
    this.replying.delete(sock);
    this.release(sock);
    count(this.perSource, from.source, -1);
    count(this.perGroup, from.group, -1);
  }
}

/** Where an inbound connection comes from, as the limits count it. */
type Origin = { readonly source: string; readonly group: string };

/** Adds delta to key's count, dropping it at 0. */
function count(map: Map<string, number>, key: string, delta: number): void {
  const n = (map.get(key) ?? 0) + delta;
  if (n <= 0) map.delete(key);
  else map.set(key, n);
}

function lengthPrefixed(frame: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(LENGTH_BYTES + frame.length);
  out.writeUInt32BE(frame.length, 0);
  out.set(frame, LENGTH_BYTES);
  return out;
}

/** Reads one length-prefixed frame; rejects if the announced length is over max or the stream ends
 *  early. `hold` is told of each chunk before it is kept; false (the socket was closed) stops. */
function readFrame(sock: Socket, maxBytes: number, hold: (n: number) => boolean = () => true): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    let want = -1;
    const done = (err?: Error, frame?: Uint8Array): void => {
      sock.off("data", onData);
      sock.off("end", onEnd);
      sock.off("close", onEnd);
      sock.off("error", done);
      if (err) reject(err);
      else resolve(frame!);
    };
    const onData = (chunk: Buffer): void => {
      if (!hold(chunk.length)) return;
      chunks.push(chunk);
      have += chunk.length;
      if (want < 0 && have >= LENGTH_BYTES) {
        want = Buffer.concat(chunks).readUInt32BE(0);
        if (want > maxBytes)
          return done(new WeftError("TRANSPORT_TOO_BIG", `stream frame of ${want} bytes over ${maxBytes}`));
      }
      if (want >= 0 && have >= LENGTH_BYTES + want) {
        const all = Buffer.concat(chunks);
        if (all.length > LENGTH_BYTES + want) return done(new WeftError("TRANSPORT_TOO_BIG", "bytes after the frame"));
        done(undefined, all.subarray(LENGTH_BYTES));
      }
    };
    const onEnd = (): void => done(new WeftError("TRANSPORT_CLOSED", "stream ended before a whole frame"));
    sock.on("data", onData);
    sock.once("end", onEnd);
    sock.once("close", onEnd);
    sock.once("error", done);
  });
}
