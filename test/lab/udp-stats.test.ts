// udpStats reads a namespace's UDP counters, with which the benchmarks tell datagrams lost on the
// path from those the receiving application did not read in time (its socket buffer was full).
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { withNetns } from "../../src/io/netns.js";
import { UdpSocket } from "../../src/io/udp.js";
import { Netns } from "../../src/lab/netns.js";
import { udpStats } from "../../src/lab/traffic.js";
import { canUseNetns } from "../support/netns.js";

const SENT = 300;

/** Node code that sends SENT datagrams of 512 bytes to 127.0.0.1:port, one after the other. */
const sender = (port: number) => `const s = require("node:dgram").createSocket("udp4"); let n = 0;
  const next = () => (n++ < ${SENT} ? s.send(Buffer.alloc(512), ${port}, "127.0.0.1", next) : s.close());
  next();`;

describe.skipIf(!canUseNetns())("lab UDP counters", () => {
  it("overflow of a socket nobody reads counts as rcvbufErrors; what an application reads, as inDatagrams", async () => {
    const ns = await Netns.create("udps");
    let socket: UdpSocket | undefined;
    try {
      await ns.exec(["ip", "link", "set", "lo", "up"]);
      // A small buffer that nobody reads (opened inside ns): all but the few that fit overflow.
      socket = withNetns(ns.name, () => UdpSocket.open({ address: "127.0.0.1", port: 0, rcvbuf: 4096 }));
      const s0 = await udpStats(ns);
      await ns.exec([process.execPath, "-e", sender(socket.port)]);
      const s1 = await udpStats(ns);
      expect(s1.rcvbufErrors - s0.rcvbufErrors).toBeGreaterThan(SENT / 2);
      expect(s1.rcvbufErrors - s0.rcvbufErrors).toBeLessThan(SENT);
      expect(s1.inDatagrams).toBe(s0.inDatagrams);
      // A receiver that reads what reaches it: every datagram is either read (inDatagrams) or
      // dropped at its full buffer (rcvbufErrors). Which share depends on how fast the receiver is
      // scheduled (the default buffer holds about half of them when it is not), so once the
      // sender has exited it reads what is queued and reports its count after a quiet 500 ms.
      const receiver = `const s = require("node:dgram").createSocket("udp4"); let n = 0, sent = false, quiet;
        const done = () => { s.close(); process.send(n, () => process.exit(0)); };
        const rearm = () => { clearTimeout(quiet); quiet = setTimeout(done, 500); };
        s.on("message", () => { n++; if (sent) rearm(); });
        s.bind(0, "127.0.0.1", () => process.send(s.address().port));
        process.on("message", () => { sent = true; rearm(); });`;
      const [cmd, ...argv] = ns.wrap([process.execPath, "-e", receiver]);
      const child = spawn(cmd, argv, { stdio: ["ignore", "ignore", "inherit", "ipc"] });
      try {
        const next = () => new Promise<number>((r) => child.once("message", (m) => r(Number(m))));
        const port = await next();
        const count = next();
        await ns.exec([process.execPath, "-e", sender(port)]);
        child.send("sent");
        const read = await count;
        expect(read).toBeGreaterThan(0);
        const s2 = await udpStats(ns);
        expect(s2.inDatagrams - s1.inDatagrams).toBe(read);
        expect(s2.rcvbufErrors - s1.rcvbufErrors).toBe(SENT - read);
      } finally {
        child.kill();
      }
    } finally {
      socket?.close();
      await ns.destroy();
    }
  });
});
