// TUN queues against the real kernel, each test in a namespace of its own.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { formatIpv4, parseIpv4 } from "../../src/net/ipv4.js";
import { constants } from "node:os";
import { addonPath, batchDone, batchErrno, batchFailed, native } from "../../src/io/native.js";
import { LinkStats } from "../../src/io/link-stats.js";
import { withNetns } from "../../src/io/netns.js";
import { TUN_OFFLOAD, TunQueue } from "../../src/io/tun.js";
import { UdpSocket } from "../../src/io/udp.js";
import { canUseNetns, Netns } from "../support/netns.js";
import { buildEcho, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, parseEcho, type Echo } from "./icmp.js";
import { Slots } from "./slots.js";
import { until } from "./until.js";

const run = promisify(execFile);
const LOCAL = parseIpv4("198.19.0.1");
const PEER = parseIpv4("198.19.0.2");
const VNET_HDR_F_NEEDS_CSUM = 1;
const VNET_HDR_GSO_UDP_L4 = 5;

describe.skipIf(!canUseNetns())("TUN queues", () => {
  let ns: Netns;
  const open: TunQueue[] = [];

  beforeEach(async () => {
    ns = await Netns.create("tun");
  });
  afterEach(async () => {
    for (const q of open.splice(0)) q.close();
    await ns.destroy();
  });

  /** Opens queues of device `name` inside the test's namespace and gives it 198.19.0.1/24. */
  async function device(name: string, queues = 1, options: { vnetHdr?: boolean } = {}): Promise<TunQueue[]> {
    const qs = withNetns(ns.name, () =>
      queues === 1 ? [TunQueue.open(name, options)] : TunQueue.openQueues(name, queues, options),
    );
    open.push(...qs);
    await ns.ip(`addr add ${formatIpv4(LOCAL)}/24 dev ${name}`);
    await ns.ip(`link set ${name} up`);
    return qs;
  }

  /** Reads from `q` until an ICMP echo request to PEER shows up; returns it and its slot. */
  async function readEchoRequest(q: TunQueue, s: Slots): Promise<{ echo: Echo; slot: number }> {
    return until("an echo request on the TUN queue", () => {
      s.reset();
      const n = q.read(s.buf, s.descs, 0, 16);
      for (let i = 0; i < n; i++) {
        const echo = parseEcho(s.packet(i));
        if (echo?.type === ICMP_ECHO_REQUEST && echo.dst === PEER) return { echo, slot: i };
      }
      return undefined;
    });
  }

  for (const vnetHdr of [false, true]) {
    it(`carries a ping both ways${vnetHdr ? " with a virtio_net_hdr in front of OFF" : ""}`, async () => {
      const [q] = await device("wt0", 1, { vnetHdr });
      const s = new Slots(16);
      // 56 data bytes: ping's 16-byte timestamp, then the pattern.
      const ping = ns.exec(["ping", "-n", "-c", "1", "-W", "5", "-s", "56", "-p", "c6130002", formatIpv4(PEER)]);
      const { echo, slot } = await readEchoRequest(q, s);
      expect(echo.src).toBe(LOCAL);
      expect(echo.data.length).toBe(56);
      const pattern = Array.from({ length: 40 }, (_, i) => [0xc6, 0x13, 0x00, 0x02][i % 4]);
      expect(Array.from(echo.data.subarray(16))).toEqual(pattern);
      if (vnetHdr) {
        // No offloads negotiated: the kernel checksummed the packet itself and sends no GSO.
        const off = s.get(slot, "OFF");
        expect(Array.from(s.buf.subarray(off - 10, off - 2))).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
      }

      const reply = buildEcho({ ...echo, src: PEER, dst: LOCAL, type: ICMP_ECHO_REPLY });
      s.reset();
      s.put(3, reply);
      const off = s.get(3, "OFF");
      if (vnetHdr) s.buf.fill(0, off - native.VNET_HDR_BYTES, off);
      expect(q.write(s.buf, s.descs, 3, 1)).toBe(1);
      expect(await ping).toMatch(/1 packets transmitted, 1 received/);
    });
  }

  it("writes a batch the kernel answers in full, and reads the answers as one batch", async () => {
    const [q] = await device("wt0");
    const s = new Slots(64);
    const data = Uint8Array.from({ length: 32 }, (_, i) => i);
    for (let i = 0; i < 64; i++)
      s.put(i, buildEcho({ src: PEER, dst: LOCAL, type: ICMP_ECHO_REQUEST, id: 77, seq: i, data }));
    expect(q.write(s.buf, s.descs, 0, 64)).toBe(64);

    // A slot too small for the packet gets its first CAP bytes, and nothing past them.
    s.reset();
    const off = s.get(0, "OFF");
    s.set(0, { CAP: 40 });
    await until("a first IPv4 reply", () => {
      s.buf.fill(0xee, off, off + 100);
      return q.read(s.buf, s.descs, 0, 1) === 1 && s.buf[off] === 0x45 ? true : undefined; // skip IPv6 chatter
    });
    expect(s.get(0, "LEN")).toBe(40);
    expect(Array.from(s.buf.subarray(off + 40, off + 100))).toEqual(new Array(60).fill(0xee));

    const seqs: number[] = [];
    await until("63 more echo replies", () => {
      s.reset();
      const n = q.read(s.buf, s.descs, 0, 64);
      for (let i = 0; i < n; i++) {
        const e = parseEcho(s.packet(i));
        if (e?.type === ICMP_ECHO_REPLY && e.id === 77 && e.dst === PEER) seqs.push(e.seq);
      }
      return seqs.length >= 63 ? true : undefined;
    });
    expect(new Set(seqs).size).toBe(63);
    expect(seqs.every((seq) => seq >= 0 && seq < 64)).toBe(true);
  });

  it("reports checksum and UDP segmentation offload in the vnet header once TUNSETOFFLOAD allows them", async () => {
    const [q] = await device("wt0", 1, { vnetHdr: true });
    q.setOffload(TUN_OFFLOAD.CSUM | TUN_OFFLOAD.USO4 | TUN_OFFLOAD.USO6);
    const sock = withNetns(ns.name, () => UdpSocket.open({ address: "0.0.0.0", port: 0 }));
    try {
      const s = new Slots(4);
      // One 3000-byte send with a 1000-byte segment size: with USO the kernel hands it over whole.
      s.put(0, new Uint8Array(3000).fill(0x5a));
      s.set(0, { ADDR: PEER, PORT: 4789, FLAGS: 1000 });
      expect(sock.send(s.buf, s.descs, 0, 1)).toBe(1);

      const hdr = await until("the UDP packet on the TUN queue", () => {
        s.reset();
        const n = q.read(s.buf, s.descs, 0, 4);
        for (let i = 0; i < n; i++) {
          const off = s.get(i, "OFF");
          if (s.buf[off + 9] === 17 && s.buf[off] === 0x45) return new DataView(s.buf.buffer, off - 12, 12);
        }
        return undefined;
      });
      expect(hdr.getUint8(0) & VNET_HDR_F_NEEDS_CSUM).toBe(VNET_HDR_F_NEEDS_CSUM);
      expect(hdr.getUint8(1)).toBe(VNET_HDR_GSO_UDP_L4);
      expect(hdr.getUint16(4, true)).toBe(1000); // gso_size
      expect(hdr.getUint16(6, true)).toBe(20); // csum_start: after the IPv4 header
      expect(hdr.getUint16(8, true)).toBe(6); // csum_offset: the UDP checksum field
    } finally {
      sock.close();
    }
  });

  it("spreads flows over the queues of a multi-queue device, each flow on one queue", async () => {
    const queues = await device("wt0", 4);
    const sock = withNetns(ns.name, () => UdpSocket.open({ address: "0.0.0.0", port: 0 }));
    try {
      const s = new Slots(64);
      const flows = 16;
      for (let i = 0; i < 64; i++) {
        s.put(i, new Uint8Array(16).fill(i));
        s.set(i, { ADDR: PEER, PORT: 20000 + (i % flows) });
      }
      expect(sock.send(s.buf, s.descs, 0, 64)).toBe(64);

      const queueOfPort = new Map<number, Set<number>>();
      let seen = 0;
      await until("64 packets over the queues", () => {
        queues.forEach((q, qi) => {
          s.reset();
          const n = q.read(s.buf, s.descs, 0, 64);
          for (let i = 0; i < n; i++) {
            const p = s.packet(i);
            if (p[0] !== 0x45 || p[9] !== 17) continue;
            const port = (p[22] << 8) | p[23];
            queueOfPort.set(port, (queueOfPort.get(port) ?? new Set()).add(qi));
            seen++;
          }
        });
        return seen >= 64 ? true : undefined;
      });
      expect(seen).toBe(64);
      expect(queueOfPort.size).toBe(flows);
      for (const qs of queueOfPort.values()) expect(qs.size).toBe(1);
      const used = new Set([...queueOfPort.values()].map((qs) => [...qs][0]));
      expect(used.size).toBeGreaterThan(1);
    } finally {
      sock.close();
    }
  });

  it("counts a packet the kernel rejects in the write's result and writes on, in the same call", async () => {
    const [q] = await device("wt0");
    const s = new Slots(4);
    const data = new Uint8Array(8);
    for (let i = 0; i < 4; i++)
      s.put(i, buildEcho({ src: PEER, dst: LOCAL, type: ICMP_ECHO_REQUEST, id: 1, seq: i, data }));
    s.buf[s.get(2, "OFF")] = 0x10; // IP version 1
    const r = q.write(s.buf, s.descs, 0, 4);
    expect([batchDone(r), batchFailed(r), batchErrno(r)]).toEqual([4, 1, constants.errno.EINVAL]);
    // A write throws only for its arguments and a closed queue.
    s.set(3, { OFF: 1 << 30 });
    expect(() => q.write(s.buf, s.descs, 3, 1)).toThrow(expect.objectContaining({ code: "ERR_OUT_OF_RANGE" }));
  });

  it("returns 0 when nothing is queued, and refuses a closed queue", async () => {
    // Left down, the device carries no IPv6 or other chatter.
    const q = withNetns(ns.name, () => TunQueue.open("wt0"));
    open.push(q);
    const s = new Slots(4);
    expect(q.read(s.buf, s.descs, 0, 4)).toBe(0);
    q.close();
    q.close();
    expect(() => q.read(s.buf, s.descs, 0, 4)).toThrow(expect.objectContaining({ code: "IO_CLOSED" }));
  });

  it("names a deleted device's read error EBADFD, which the dataplane's workers match on", async () => {
    // libuv names no EBADFD: the code was "Unknown system error -77".
    const [q] = await device("wt0");
    await ns.ip("link del wt0");
    const s = new Slots(4);
    expect(() => q.read(s.buf, s.descs, 0, 4)).toThrow(
      expect.objectContaining({ code: "EBADFD", errno: -77, message: expect.stringMatching(/device deleted/) }),
    );
  });

  it("counts what the kernel drops at a full ring, in the namespace where the device's stats were opened", async () => {
    const [q] = await device("wt0");
    await ns.ip("link set wt0 txqueuelen 8");
    const stats = withNetns(ns.name, () => LinkStats.open("wt0"));
    try {
      expect(stats.txDropped()).toBe(0);
      // 50 datagrams routed into the device, none read: the ring keeps 8 (with the device's own
      // IPv6 chatter, if any came first) and the kernel drops the rest.
      const flood = `const s = require("node:dgram").createSocket("udp4"); let n = 50;
        const next = () => (n-- > 0 ? s.send(Buffer.alloc(100), 9, "${formatIpv4(PEER)}", next) : s.close()); next();`;
      await run("ip", ["netns", "exec", ns.name, process.execPath, "-e", flood]);
      // Read back on this thread, outside the namespace: still the device's own counter.
      const dropped = stats.txDropped();
      expect(dropped).toBeGreaterThanOrEqual(42);
      const [link] = JSON.parse((await run("ip", ["-n", ns.name, "-j", "-s", "link", "show", "dev", "wt0"])).stdout);
      expect(link.stats64.tx.dropped).toBe(dropped);
      const s = new Slots(16);
      expect(q.read(s.buf, s.descs, 0, 16)).toBe(8);
      // Deleted (a restart's cause), the device's counters go: the count last read stays, not 0,
      // which made the dataplane's tunRingDrops total fall at such a restart.
      await ns.ip("link del wt0");
      expect(stats.txDropped()).toBe(dropped);
    } finally {
      stats.close();
    }
    expect(() => withNetns(ns.name, () => LinkStats.open("wt9"))).toThrow(
      expect.objectContaining({ code: "IO_LINK_STATS" }),
    );
    expect(() => LinkStats.open("wt0")).toThrow(expect.objectContaining({ code: "IO_LINK_STATS" }));
  });

  it("finds its device's counters at the end of a long /proc/net/dev, read a page at a time (a node with many pods)", async () => {
    // 700 devices (veth pairs) before it, about 90 KiB of lines; the TUN device is listed last.
    const batch = Array.from({ length: 350 }, (_, i) => `link add v${i}a type veth peer name v${i}b`).join("\n");
    await new Promise<void>((resolve, reject) => {
      const p = execFile("ip", ["-n", ns.name, "-batch", "-"], (e) => (e ? reject(e) : resolve()));
      p.stdin?.end(batch);
    });
    await device("wt0");
    const { stdout } = await run("ip", ["netns", "exec", ns.name, "cat", "/proc/net/dev"]);
    expect(stdout.length).toBeGreaterThan(64 << 10);
    expect(stdout.trimEnd().split("\n").at(-1)).toMatch(/^\s*wt0:/);
    const stats = withNetns(ns.name, () => LinkStats.open("wt0"));
    try {
      expect(stats.txDropped()).toBe(0);
    } finally {
      stats.close();
    }
  });

  it("names the cause of failed opens: EBUSY, EINVAL, EPERM", async () => {
    await device("wt0");
    expect(() => withNetns(ns.name, () => TunQueue.open("wt0"))).toThrow(
      expect.objectContaining({
        code: "EBUSY",
        errno: -16,
        syscall: "ioctl",
        message: expect.stringMatching(/held by another process/),
      }),
    );
    await device("wt1", 2);
    expect(() => withNetns(ns.name, () => TunQueue.open("wt1"))).toThrow(
      expect.objectContaining({ code: "EINVAL", message: expect.stringMatching(/exists with other flags/) }),
    );
    expect(() => withNetns(ns.name, () => TunQueue.open("a-name-far-too-long"))).toThrow(RangeError);

    // Without CAP_NET_ADMIN (dropped for a child process), creating a device fails with EPERM.
    const script = `try { require(${JSON.stringify(addonPath)}).tunOpen("wt2", false, false); console.log("{}") }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`;
    const { stdout } = await run(
      "ip",
      [
        "netns",
        "exec",
        ns.name,
        "setpriv",
        "--inh-caps=-net_admin",
        "--bounding-set=-net_admin",
        process.execPath,
        "-e",
        script,
      ],
      { timeout: 10_000 },
    );
    const failure = JSON.parse(stdout);
    expect(failure.code).toBe("EPERM");
    expect(failure.message).toMatch(/needs CAP_NET_ADMIN: run weft as root/);
  });
});
