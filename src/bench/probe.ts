// The flood of `weft bench`'s flood tail: timestamped UDP datagrams from one pod to another, run
// as its own process in each pod's namespace (`node probe.js send|recv ...`). The sender puts its
// CLOCK_MONOTONIC time (process.hrtime, the same clock in every namespace of the machine) in each
// datagram; the receiver notes when each one arrived. The flood itself is timestamped, so the
// bench sees its own datagrams' one-way delay, and which were still delivered after it stopped:
// a separate probe flow would share the flood's queues on kernel vxlan but, with its own port and
// so its own flow hash, only sometimes on a userspace dataplane (backends not measured alike).
//   recv <addr> <port> <seconds>   prints {"count", "maxDelayNs", "delayP50Ns", "delayP99Ns",
//                                  "arrivals": [[sentNs, receivedNs], ...]} (the latest KEEP
//                                  arrivals; ns as strings; percentiles over every arrival)
//   send <addr> <port> <seconds> <perSecond> <length> <count>  prints {"sent": n, "lastSentNs"}
//                                  (perSecond 0: as fast as it can; stops at seconds or count)
import { createSocket } from "node:dgram";
import { percentile } from "./stats.js";

const now = () => process.hrtime.bigint();

/** Arrivals the receiver keeps (the latest ones): more than any queue on the path holds. */
const KEEP = 65536;

function receive(addr: string, port: number, seconds: number): void {
  const sock = createSocket("udp4");
  const sent = new BigInt64Array(KEEP);
  const received = new BigInt64Array(KEEP);
  // Every arrival's delay (ns), for the percentiles: a flood's worth of numbers, bounded by its count.
  const delays: number[] = [];
  let count = 0;
  let maxDelayNs = 0n;
  sock.on("message", (msg) => {
    if (msg.length < 8) return;
    const at = now();
    const i = count++ % KEEP;
    sent[i] = msg.readBigInt64BE(0);
    received[i] = at;
    const delay = at - sent[i];
    delays.push(Number(delay));
    if (delay > maxDelayNs) maxDelayNs = delay;
  });
  const finish = () => {
    sock.close();
    const n = Math.min(count, KEEP);
    const first = count - n;
    const arrivals = Array.from({ length: n }, (_, k) => [
      sent[(first + k) % KEEP].toString(),
      received[(first + k) % KEEP].toString(),
    ]);
    const result = {
      count,
      maxDelayNs: maxDelayNs.toString(),
      delayP50Ns: percentile(delays, 0.5),
      delayP99Ns: percentile(delays, 0.99),
      arrivals,
    };
    // Exit only once the pipe took it all: writes to a pipe are asynchronous.
    process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
  };
  sock.bind(port, addr, () => process.stdout.write("listening\n"));
  setTimeout(finish, seconds * 1000);
  process.once("SIGTERM", finish);
}

/** Most datagrams handed to the socket before waiting for their callbacks. */
const WINDOW = 64;

async function send(
  addr: string,
  port: number,
  seconds: number,
  perSecond: number,
  length: number,
  count: number,
): Promise<void> {
  const sock = createSocket("udp4");
  await new Promise<void>((r) => sock.connect(port, addr, () => r()));
  const start = now();
  const end = start + BigInt(Math.round(seconds * 1e9));
  const gapNs = perSecond > 0 ? BigInt(Math.round(1e9 / perSecond)) : 0n;
  let sent = 0;
  let last = start;
  for (let t = now(); t < end && sent < count; t = now()) {
    // Paced: what is due by now (against the start, so late timers never make the rate drift).
    const due = gapNs > 0n ? Number((t - start) / gapNs) + 1 - sent : WINDOW;
    const burst = Math.min(WINDOW, due, count - sent);
    if (burst <= 0) {
      await new Promise((r) => setTimeout(r, 1));
      continue;
    }
    await Promise.all(
      Array.from({ length: burst }, () => {
        // A buffer per datagram: a queued send still reads its own.
        const msg = Buffer.alloc(Math.max(8, length));
        last = now();
        msg.writeBigInt64BE(last, 0);
        sent++;
        return new Promise<void>((r) => sock.send(msg, () => r()));
      }),
    );
  }
  sock.close();
  process.stdout.write(JSON.stringify({ sent, lastSentNs: last.toString() }) + "\n");
}

const [mode, addr, port, seconds, perSecond, length, count] = process.argv.slice(2);
if (mode === "recv") receive(addr, Number(port), Number(seconds));
else if (mode === "send" && Number(perSecond) >= 0 && Number(length) >= 8 && Number(count) > 0)
  await send(addr, Number(port), Number(seconds), Number(perSecond), Number(length), Number(count));
else {
  process.stderr.write(
    "usage: probe.js recv <addr> <port> <seconds> | send <addr> <port> <seconds> <perSecond (0: unpaced)> <length> <count>\n",
  );
  process.exit(2);
}
