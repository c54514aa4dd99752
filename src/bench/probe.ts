// The flood of `weft bench`'s flood tail: timestamped UDP datagrams from one pod to another, run
// as its own process in each pod's namespace (`node probe.js send|recv ...`). The sender puts its
// CLOCK_MONOTONIC time (process.hrtime, the same clock in every namespace of the machine) in each
// datagram; the receiver notes when each one arrived. The flood itself is timestamped, so the
// bench sees its own datagrams' one-way delay, and which were still delivered after it stopped:
// a separate probe flow would share the flood's queues on kernel vxlan but, with its own port and
// so its own flow hash, only sometimes on a userspace dataplane (backends not measured alike).
// The figures include the receiving end: the wait in the receiving socket and for this process to
// be scheduled and read it (an application's view, not the path's alone).
//   recv <addr> <port> <seconds> <max>  prints {"count", "maxDelayNs", "delayP50Ns", "delayP99Ns",
//                                  "lastArrivalNs", "cutOff", "arrivals": [[sentNs, receivedNs], ...]}
//                                  (the latest KEEP arrivals; ns as strings; percentiles over every
//                                  arrival up to max, the flood's count bound). Asked to stop
//                                  (SIGTERM), it first waits for QUIET_MS without an arrival, at most
//                                  STOP_LIMIT_MS: `cutOff` when datagrams were still arriving then.
//   send <addr> <port> <seconds> <perSecond> <length> <count>  prints {"sent", "failed",
//                                  "startNs", "lastSentNs"} (perSecond 0: as fast as it can; stops
//                                  at seconds or count; startNs once connected, failed: sends the
//                                  socket refused, not in sent)
import { createSocket } from "node:dgram";
import { percentileOfSorted } from "./stats.js";

const now = () => process.hrtime.bigint();

/** Arrivals the receiver keeps (the latest ones): more than any queue on the path holds. */
const KEEP = 65536;

/** How long without an arrival a receiver asked to stop waits for, and for how long at most. */
const QUIET_MS = 200;
const STOP_LIMIT_MS = 5000;

function receive(addr: string, port: number, seconds: number, max: number): void {
  const sock = createSocket("udp4");
  const sent = new BigInt64Array(KEEP);
  const received = new BigInt64Array(KEEP);
  // Every arrival's delay (ns) up to the flood's count bound, for the percentiles.
  const delays = new Float64Array(max);
  let count = 0;
  let maxDelayNs = 0n;
  let lastArrival = 0n;
  sock.on("message", (msg) => {
    if (msg.length < 8) return;
    const at = now();
    lastArrival = at;
    const i = count % KEEP;
    sent[i] = msg.readBigInt64BE(0);
    received[i] = at;
    const delay = at - sent[i];
    if (count < max) delays[count] = Number(delay);
    count++;
    if (delay > maxDelayNs) maxDelayNs = delay;
  });
  let finished = false;
  const finish = (cutOff: boolean) => {
    if (finished) return;
    finished = true;
    sock.close();
    const n = Math.min(count, KEEP);
    const first = count - n;
    const arrivals = Array.from({ length: n }, (_, k) => [
      sent[(first + k) % KEEP].toString(),
      received[(first + k) % KEEP].toString(),
    ]);
    const sorted = delays.subarray(0, Math.min(count, max)).sort();
    const result = {
      count,
      maxDelayNs: maxDelayNs.toString(),
      delayP50Ns: percentileOfSorted(sorted, 0.5),
      delayP99Ns: percentileOfSorted(sorted, 0.99),
      lastArrivalNs: lastArrival.toString(),
      cutOff,
      arrivals,
    };
    // Exit only once the pipe took it all: writes to a pipe are asynchronous.
    process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
  };
  sock.bind(port, addr, () => process.stdout.write("listening\n"));
  setTimeout(() => finish(false), seconds * 1000);
  // A queue may still be delivering when asked to stop: its tail is not cut off unsaid.
  process.once("SIGTERM", () => {
    const asked = now();
    const poll = setInterval(() => {
      const t = now();
      if (t - lastArrival >= BigInt(QUIET_MS * 1e6)) finish(false);
      else if (t - asked >= BigInt(STOP_LIMIT_MS * 1e6)) finish(true);
      if (finished) clearInterval(poll);
    }, 20);
  });
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
  let failed = 0;
  const gapNs = perSecond > 0 ? BigInt(Math.round(1e9 / perSecond)) : 0n;
  let handed = 0;
  let last = start;
  for (let t = now(); t < end && handed < count; t = now()) {
    // Paced: what is due by now (against the start, so late timers never make the rate drift).
    const due = gapNs > 0n ? Number((t - start) / gapNs) + 1 - handed : WINDOW;
    const burst = Math.min(WINDOW, due, count - handed);
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
        handed++;
        return new Promise<void>((r) =>
          sock.send(msg, (e) => {
            if (e) failed++;
            r();
          }),
        );
      }),
    );
  }
  sock.close();
  process.stdout.write(
    JSON.stringify({ sent: handed - failed, failed, startNs: start.toString(), lastSentNs: last.toString() }) + "\n",
  );
}

const [mode, addr, port, seconds, perSecond, length, count] = process.argv.slice(2);
if (mode === "recv" && Number(perSecond) > 0) receive(addr, Number(port), Number(seconds), Number(perSecond));
else if (mode === "send" && Number(perSecond) >= 0 && Number(length) >= 8 && Number(count) > 0)
  await send(addr, Number(port), Number(seconds), Number(perSecond), Number(length), Number(count));
else {
  process.stderr.write(
    "usage: probe.js recv <addr> <port> <seconds> <max> | send <addr> <port> <seconds> <perSecond (0: unpaced)> <length> <count>\n",
  );
  process.exit(2);
}
