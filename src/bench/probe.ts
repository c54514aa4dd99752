// The flood-tail probe of `weft bench`: a stream of timestamped UDP datagrams between two pods,
// run as its own process in each pod's namespace (`node probe.js send|recv ...`). The sender puts
// its CLOCK_MONOTONIC time (process.hrtime, the same clock in every namespace of the machine) in
// each datagram; the receiver notes when each one arrived. So the bench sees every datagram's
// one-way delay, and which ones were still delivered after a flood beside them had stopped.
//   recv <addr> <port> <seconds>   prints {"count", "maxDelayNs", "arrivals": [[sentNs, receivedNs], ...]}
//                                  (the latest KEEP arrivals; ns as strings)
//   send <addr> <port> <seconds> <perSecond> <length>  prints {"sent": n, "lastSentNs": "...",
//                                  "finalBurstNs": "..."} (the last datagram's and its burst's first one's times)
import { createSocket } from "node:dgram";

const now = () => process.hrtime.bigint();

/** Arrivals the receiver keeps (the latest ones): half a second of the fastest flood we see. */
const KEEP = 65536;

function receive(addr: string, port: number, seconds: number): void {
  const sock = createSocket("udp4");
  const sent = new BigInt64Array(KEEP);
  const received = new BigInt64Array(KEEP);
  let count = 0;
  let maxDelayNs = 0n;
  sock.on("message", (msg) => {
    if (msg.length < 8) return;
    const at = now();
    const i = count++ % KEEP;
    sent[i] = msg.readBigInt64BE(0);
    received[i] = at;
    if (at - sent[i] > maxDelayNs) maxDelayNs = at - sent[i];
  });
  const finish = () => {
    sock.close();
    const n = Math.min(count, KEEP);
    const first = count - n;
    const arrivals = Array.from({ length: n }, (_, k) => [
      sent[(first + k) % KEEP].toString(),
      received[(first + k) % KEEP].toString(),
    ]);
    // Exit only once the pipe took it all: writes to a pipe are asynchronous.
    process.stdout.write(JSON.stringify({ count, maxDelayNs: maxDelayNs.toString(), arrivals }) + "\n", () =>
      process.exit(0),
    );
  };
  sock.bind(port, addr, () => process.stdout.write("listening\n"));
  setTimeout(finish, seconds * 1000);
  process.once("SIGTERM", finish);
}

/** Most datagrams handed to the socket before waiting for their callbacks (after a late timer). */
const WINDOW = 64;

async function send(addr: string, port: number, seconds: number, perSecond: number, length: number): Promise<void> {
  const sock = createSocket("udp4");
  await new Promise<void>((r) => sock.connect(port, addr, () => r()));
  const start = now();
  const end = start + BigInt(Math.round(seconds * 1e9));
  const gapNs = BigInt(Math.round(1e9 / perSecond));
  let sent = 0;
  let last = start;
  let burstStart = start;
  for (let t = now(); t < end; t = now()) {
    // Paced: what is due by now (against the start, so late timers never make the rate drift).
    const burst = Math.min(WINDOW, Number((t - start) / gapNs) + 1 - sent);
    if (burst <= 0) {
      await new Promise((r) => setTimeout(r, 1));
      continue;
    }
    burstStart = now();
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
  process.stdout.write(
    JSON.stringify({ sent, lastSentNs: last.toString(), finalBurstNs: burstStart.toString() }) + "\n",
  );
}

const [mode, addr, port, seconds, perSecond, length] = process.argv.slice(2);
if (mode === "recv") receive(addr, Number(port), Number(seconds));
else if (mode === "send" && Number(perSecond) > 0)
  await send(addr, Number(port), Number(seconds), Number(perSecond), Number(length ?? 64));
else {
  process.stderr.write(
    "usage: probe.js recv <addr> <port> <seconds> | send <addr> <port> <seconds> <perSecond> <length>\n",
  );
  process.exit(2);
}
