// A network device's drop counters, read from /proc/net/dev. The file is opened once, by the thread
// that created the device: a /proc net file stays bound to the namespace it was opened in, so the
// counters are the device's own even when the opener has left that namespace since (a dataplane
// built inside withNetns) — /sys/class/net would show the namespace sysfs was mounted in instead.
// Each look preads the file to its end, no process spawned: cheap enough for every scrape.
import { openSync, readSync } from "node:fs";
import { WeftError } from "../errors.js";
import { FdHandle } from "./fd-handle.js";

/** /proc/net/dev's columns after the device name: 8 receive counters, then transmit bytes, packets, errs, drop. */
const TX_DROP_COLUMN = 11;

/** A device's line of /proc/net/dev text, parsed; undefined when the device is not in it. */
function parseNetDev(text: string, device: string): { txDropped: number } | undefined {
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0 || line.slice(0, colon).trim() !== device) continue;
    const fields = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/);
    return { txDropped: Number(fields[TX_DROP_COLUMN]) };
  }
  return undefined;
}

export class LinkStats extends FdHandle {
  /** Grows when the file outgrows it (hundreds of pods, hundreds of veths). */
  private buf = Buffer.alloc(64 << 10);
  /** The count last read: what txDropped says once the device is gone, its counters with it. */
  private lastTxDropped = 0;

  private constructor(
    fd: number,
    readonly device: string,
  ) {
    super(fd, "device's stats");
  }

  /** Opens the calling thread's /proc/net/dev for `device`, which must exist in that namespace. */
  static open(device: string): LinkStats {
    const stats = new LinkStats(openSync("/proc/thread-self/net/dev", "r"), device);
    const first = stats.read();
    if (first === undefined) {
      stats.close();
      throw new WeftError(
        "IO_LINK_STATS",
        `device ${device} is not in /proc/net/dev of this thread's network namespace; open its stats where it was created`,
      );
    }
    stats.lastTxDropped = first.txDropped;
    return stats;
  }

  /**
   * Packets the device dropped on transmit: on a TUN device, those the kernel routed to it while
   * the queue's ring was full (tun_net_xmit drops instead of stopping the queue) or had no reader.
   * Once the device is deleted, the count last read (a total must not fall; drops since that read
   * are lost with the device).
   */
  txDropped(): number {
    const now = this.read();
    if (now) this.lastTxDropped = now.txDropped;
    return this.lastTxDropped;
  }

  private read(): { txDropped: number } | undefined {
    const fd = this.fd;
    // pread at 0 restarts the seq_file, so the same fd gives fresh counters each time. Each read
    // returns about a page (some 30 devices), so read to the end: a node lists every pod's veth.
    let n = 0;
    for (;;) {
      if (n === this.buf.length) this.buf = Buffer.concat([this.buf, Buffer.alloc(this.buf.length)]);
      const got = readSync(fd, this.buf, n, this.buf.length - n, n);
      if (got === 0) break;
      n += got;
    }
    return parseNetDev(this.buf.toString("latin1", 0, n), this.device);
  }
}
