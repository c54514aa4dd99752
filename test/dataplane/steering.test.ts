// Property tests of the steering programs (src/dataplane/steering.ts) run in a classic-BPF
// reference interpreter (test/reference/cbpf.ts) over generated VXLAN (and, for IPv4, flannel udp)
// datagrams of both inner families: both directions of an echo and of a TCP or UDP flow land on one
// socket index, the transport ports and echo identifiers spread over every index, and a datagram
// too short for the loads gives 0. That the interpreter is the kernel's: real reuseport groups in
// namespaces the test creates hand sampled datagrams of each kind to the sockets the interpreter
// picks, and a real multi-queue TUN device with the eBPF form of the program sends each packet on
// the queue whose socket the interpreter picks for the same packet inside a datagram. (The IPv4
// program is also checked end to end by test/dataplane/userspace.test.ts: a ping's requests and
// replies stay on one worker.)
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withNetns } from "../../src/io/netns.js";
import { UdpSocket, type UdpOptions } from "../../src/io/udp.js";
import { parseIpv4 } from "../../src/net/ipv4.js";
import type { WireFormat } from "../../src/dataplane/queue-task.js";
import { innerFlowSteering, tunFlowSteering } from "../../src/dataplane/steering.js";
import { TunQueue } from "../../src/io/tun.js";
import { projectFile } from "../../src/paths.js";
import { buildIpv4, buildVxlan } from "../reference/build.js";
import { runClassicBpf } from "../reference/cbpf.js";
import { addrBytes } from "../reference/packets6.js";
import { Slots } from "../io/slots.js";
import { until } from "../io/until.js";
import { canUseNetns, Netns, vethPair } from "../support/netns.js";

const MAC = Uint8Array.from([0x0a, 0x58, 0x20, 0x01, 0x80, 0x01]);
const POD4 = 0xc6130000; // 198.19.0.0/16
const POD6 = 0x20010002_00008000n << 64n; // 2001:2:0:8000::/49

/** A packet as a map key. */
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

type Family = 4 | 6;
interface Flow {
  family: Family;
  src: number | bigint;
  dst: number | bigint;
}

/** An inner IPv4 or IPv6 packet (no extension headers, no options) carrying `l4` as `protocol`. */
function innerPacket(f: Flow, protocol: number, l4: Uint8Array): Uint8Array {
  if (f.family === 4) return buildIpv4({ src: Number(f.src), dst: Number(f.dst), protocol, payload: l4 });
  const p = new Uint8Array(40 + l4.length);
  p.set([0x60, 0, 0, 0, l4.length >> 8, l4.length & 255, protocol, 64]);
  p.set(addrBytes(BigInt(f.src)), 8);
  p.set(addrBytes(BigInt(f.dst)), 24);
  p.set(l4, 40);
  return p;
}

/** The UDP payload the reuseport program sees for an inner packet. */
const datagram = (format: WireFormat, family: Family, inner: Uint8Array) =>
  format === "udp" ? inner : buildVxlan(1, MAC, MAC, family === 4 ? 0x0800 : 0x86dd, inner);

/** ICMP or ICMPv6 echo: type, code, checksum, identifier, sequence, data. */
function echo(family: Family, reply: boolean, id: number, seq: number, checksum: number, data: Uint8Array) {
  const type = family === 4 ? (reply ? 0 : 8) : reply ? 129 : 128;
  return Uint8Array.from([type, 0, checksum >> 8, checksum & 255, id >> 8, id & 255, seq >> 8, seq & 255, ...data]);
}

/** The start of a TCP or UDP header: the ports, then arbitrary bytes. */
const ports = (sport: number, dport: number, rest: Uint8Array) =>
  Uint8Array.from([sport >> 8, sport & 255, dport >> 8, dport & 255, ...rest]);

/** Both wire formats carry IPv4; only VXLAN carries IPv6 (flannel's udp format is IPv4-only). */
const CASES: ReadonlyArray<{ format: WireFormat; family: Family }> = [
  { format: "vxlan", family: 4 },
  { format: "udp", family: 4 },
  { format: "vxlan", family: 6 },
];

const flowOf = (family: Family) =>
  family === 4
    ? fc.record({
        family: fc.constant<Family>(4),
        src: fc.integer({ min: 0, max: 0xffff }).map((h) => (POD4 | h) >>> 0),
        dst: fc.integer({ min: 0, max: 0xffff }).map((h) => (POD4 | h) >>> 0),
      })
    : fc.record({
        family: fc.constant<Family>(6),
        src: fc.bigInt({ min: 0n, max: (1n << 79n) - 1n }).map((h) => POD6 | h),
        dst: fc.bigInt({ min: 0n, max: (1n << 79n) - 1n }).map((h) => POD6 | h),
      });
const workersArb = fc.integer({ min: 2, max: 16 });

describe.each(CASES)("receive steering program, inner IPv$family over $format", ({ format, family }) => {
  const icmp = family === 4 ? 1 : 58;
  const steer = (workers: number, inner: Uint8Array) =>
    runClassicBpf(innerFlowSteering(format, workers, family), datagram(format, family, inner));

  it("puts an echo request and its reply (addresses swapped, any sequence, checksum and data) on one index, below the worker count", () => {
    fc.assert(
      fc.property(
        workersArb,
        flowOf(family),
        fc.integer({ min: 0, max: 0xffff }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff })), {
          minLength: 1,
          maxLength: 4,
        }),
        fc.uint8Array({ maxLength: 64 }),
        (workers, f, id, echoes, data) => {
          const request = steer(workers, innerPacket(f, icmp, echo(family, false, id, 0, 0, data)));
          expect(request).toBeGreaterThanOrEqual(0);
          expect(request).toBeLessThan(workers);
          for (const [seq, checksum] of echoes) {
            expect(steer(workers, innerPacket(f, icmp, echo(family, false, id, seq, checksum, data)))).toBe(request);
            const back = { family, src: f.dst, dst: f.src };
            expect(steer(workers, innerPacket(back, icmp, echo(family, true, id, seq, checksum ^ 0x800, data)))).toBe(
              request,
            );
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("puts both directions of a TCP or UDP flow (addresses and ports swapped) on one index", () => {
    fc.assert(
      fc.property(
        workersArb,
        flowOf(family),
        fc.constantFrom<6 | 17>(6, 17),
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.uint8Array({ minLength: 16, maxLength: 40 }),
        fc.uint8Array({ minLength: 16, maxLength: 40 }),
        (workers, f, protocol, sport, dport, there, back) => {
          const forward = steer(workers, innerPacket(f, protocol, ports(sport, dport, there)));
          const reverse = { family, src: f.dst, dst: f.src };
          expect(steer(workers, innerPacket(reverse, protocol, ports(dport, sport, back)))).toBe(forward);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("spreads TCP and UDP flows of many source ports, and pings of many identifiers, over every index", () => {
    fc.assert(
      fc.property(
        workersArb,
        flowOf(family),
        fc.constantFrom<6 | 17>(6, 17),
        fc.integer({ min: 1, max: 0xffff }),
        fc.uniqueArray(fc.integer({ min: 1024, max: 0xffff }), { minLength: 256, maxLength: 256 }),
        fc.uint8Array({ minLength: 16, maxLength: 40 }),
        (workers, f, protocol, dport, sports, rest) => {
          const hit = (ixs: number[]) => [...new Set(ixs)].sort((a, b) => a - b);
          const all = Array.from({ length: workers }, (_, i) => i);
          expect(hit(sports.map((s) => steer(workers, innerPacket(f, protocol, ports(s, dport, rest)))))).toEqual(all);
          expect(
            hit(sports.map((id) => steer(workers, innerPacket(f, icmp, echo(family, false, id, 1, 0, rest))))),
          ).toEqual(all);
        },
      ),
      { numRuns: 50 },
    );
  });

  it("a datagram cut short of the last byte the program loads gives 0", () => {
    const ipStart = format === "vxlan" ? 22 : 0;
    const l4 = family === 4 ? 20 : 40;
    fc.assert(
      fc.property(
        workersArb,
        flowOf(family),
        fc.boolean(),
        fc.integer({ min: 1, max: 0xffff }),
        fc.nat(),
        (workers, f, isEcho, id, cut) => {
          const inner = isEcho
            ? innerPacket(f, icmp, echo(family, false, id, 1, 0, new Uint8Array(8)))
            : innerPacket(f, 17, ports(id, 4789, new Uint8Array(12)));
          // Echo: the identifier ends 6 bytes into the ICMP header; otherwise the ports 4 bytes in.
          const needed = ipStart + l4 + (isEcho ? 6 : 4);
          const whole = datagram(format, family, inner);
          const short = whole.subarray(0, cut % needed);
          expect(runClassicBpf(innerFlowSteering(format, workers, family), short)).toBe(0);
          // One byte more would be enough: the cut is what makes it 0, not the flow.
          expect(runClassicBpf(innerFlowSteering(format, workers, family), whole.subarray(0, needed))).toBe(
            steer(workers, inner),
          );
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("classic BPF reference interpreter", () => {
  it("follows linux/filter.h: big-endian loads, unsigned arithmetic, jumps, 0 on a load past the end", () => {
    // A = u32 at 0 == 0x01020304 ? u16 at 4 : u8 at 6; X = A; A = ((A * K) ^ X) >> 16 % 1000.
    const prog = Int32Array.from([
      ...[0x20, 0, 0, 0], // ld [0]
      ...[0x15, 0, 2, 0x01020304], // jeq #0x01020304, 0, 2
      ...[0x28, 0, 0, 4], // ldh [4]
      ...[0x05, 0, 0, 1], // ja +1
      ...[0x30, 0, 0, 6], // ldb [6]
      ...[0x07, 0, 0, 0], // tax
      ...[0x24, 0, 0, 0x9e3779b1 | 0], // mul #0x9e3779b1
      ...[0xac, 0, 0, 0], // xor x
      ...[0x74, 0, 0, 16], // rsh #16
      ...[0x94, 0, 0, 1000], // mod #1000
      ...[0x16, 0, 0, 0], // ret a
    ]);
    const expected = (a: number) => (((Math.imul(a, 0x9e3779b1) >>> 0) ^ a) >>> 16) % 1000;
    expect(runClassicBpf(prog, Uint8Array.from([1, 2, 3, 4, 0xab, 0xcd, 0xef]))).toBe(expected(0xabcd));
    expect(runClassicBpf(prog, Uint8Array.from([1, 2, 3, 5, 0xab, 0xcd, 0xef]))).toBe(expected(0xef));
    expect(runClassicBpf(prog, Uint8Array.from([1, 2, 3, 5, 0xab, 0xcd]))).toBe(0);
    expect(runClassicBpf(prog, Uint8Array.from([1, 2, 3]))).toBe(0);
    expect(() => runClassicBpf(Int32Array.from([0x06, 0, 0, 1]), new Uint8Array(4))).toThrow(/not in the reference/);
  });
});

describe.skipIf(!canUseNetns())("the kernel's reuseport groups pick the socket the reference interpreter picks", () => {
  const [A, B] = [parseIpv4("198.18.0.1"), parseIpv4("198.18.0.2")];
  const WORKERS = 4;
  let nsA: Netns;
  let nsB: Netns;
  const sockets: UdpSocket[] = [];
  const open = (ns: Netns, options: UdpOptions) => {
    const sock = withNetns(ns.name, () => UdpSocket.open(options));
    sockets.push(sock);
    return sock;
  };

  beforeAll(async () => {
    nsA = await Netns.create("stra");
    nsB = await Netns.create("strb");
    await vethPair(nsA, "sa", "198.18.0.1/24", nsB, "sb", "198.18.0.2/24");
  });
  afterAll(async () => {
    for (const s of sockets) s.close();
    await nsA?.destroy();
    await nsB?.destroy();
  });

  it.each(CASES)(
    "inner IPv$family over $format: echoes, TCP/UDP flows and short datagrams",
    async ({ format, family }) => {
      const icmp = family === 4 ? 1 : 58;
      const first = open(nsB, { address: B, port: 0, reusePort: true });
      const group = [
        first,
        ...Array.from({ length: WORKERS - 1 }, () => open(nsB, { address: B, port: first.port, reusePort: true })),
      ];
      const program = innerFlowSteering(format, WORKERS, family);
      first.setReuseportProgram(program);
      const sender = open(nsA, { address: A, port: 0 });
      // Each full datagram ends in its own 2-byte tag, past every byte the program reads; the short
      // ones are cuts of one datagram, told apart by length.
      const tag = (i: number) => Uint8Array.from([i >> 8, i & 255]);
      const full = fc
        .sample(
          fc.tuple(flowOf(family), fc.constantFrom(icmp, 6, 17), fc.boolean(), fc.integer({ min: 0, max: 0xffff })),
          120,
        )
        .map(([f, protocol, reply, n], i) => {
          const l4 =
            protocol === icmp
              ? echo(family, reply, n, i, n ^ i, tag(i))
              : ports(n, 443, Uint8Array.from([...new Uint8Array(16), ...tag(i)]));
          return datagram(format, family, innerPacket(f, protocol, l4));
        });
      const needed = (format === "vxlan" ? 22 : 0) + (family === 4 ? 20 : 40) + 4;
      const short = Array.from({ length: needed }, (_, n) => full[0].subarray(0, n));
      const all = [...full, ...short];
      const expected = new Map(all.map((d) => [hex(d), runClassicBpf(program, d)]));
      expect(expected.size).toBe(all.length);
      // The sample covers every socket, so that a kernel that ignored the program would show.
      expect(new Set(expected.values()).size).toBe(WORKERS);

      const out = new Slots(all.length);
      all.forEach((d, i) => {
        out.put(i, d);
        out.set(i, { ADDR: B, PORT: first.port });
      });
      let sent = 0;
      await until("every datagram sent", () =>
        (sent += sender.send(out.buf, out.descs, sent, all.length - sent)) === all.length ? true : undefined,
      );
      const got = new Map<string, number>();
      const inbox = new Slots(all.length);
      await until(
        `${all.length} datagrams received`,
        () => {
          for (const [q, sock] of group.entries()) {
            inbox.reset();
            const n = sock.recv(inbox.buf, inbox.descs, 0, all.length);
            for (let k = 0; k < n; k++) got.set(hex(inbox.packet(k)), q);
          }
          return got.size === all.length ? true : undefined;
        },
        5000,
      );
      expect(got).toEqual(expected);
    },
  );
});

describe.skipIf(!canUseNetns())(
  "the TUN device's steering program sends a packet on the queue whose socket gets its flow",
  () => {
    const QUEUES = 4;
    let ns: Netns;
    const queues: TunQueue[] = [];

    beforeAll(async () => {
      ns = await Netns.create("strt");
    });
    afterAll(async () => {
      for (const q of queues.splice(0)) q.close();
      await ns?.destroy();
    });

    it.each([4, 6] as const)("IPv%i: UDP flows of many source ports, and pings", async (family) => {
      const dev = `st${family}`;
      const opened = withNetns(ns.name, () => TunQueue.openQueues(dev, QUEUES));
      queues.push(...opened);
      opened[0].setSteeringProgram(tunFlowSteering(QUEUES, family));
      const [local, peer] =
        family === 4 ? ["198.19.0.1/16", "198.19.7.2"] : ["2001:2:0:8000::1/49", "2001:2:0:8000::7:2"];
      await ns.ip(`addr add ${local} dev ${dev}${family === 6 ? " nodad" : ""}`);
      await ns.ip(`link set ${dev} up`);
      // 64 UDP flows (a socket each, so a source port each) and 8 pings (an echo identifier each),
      // every packet sent into the device by the namespace's own stack.
      const FLOWS = 64;
      const PINGS = 8;
      const send = `const d=require("node:dgram");let n=0;for(let i=0;i<${FLOWS};i++){const s=d.createSocket("udp${family}");s.send(Buffer.alloc(32,i),4789,"${peer}",()=>{s.close();if(++n===${FLOWS})process.exit(0)})}`;
      const pings = Array.from({ length: PINGS }, () =>
        ns.exec(["ping", `-${family}`, "-n", "-c", "1", "-W", "1", peer]).catch(() => "no reply, as expected"),
      );
      await ns.exec([process.execPath, "-e", send]);
      await Promise.all(pings);

      const icmp = family === 4 ? 1 : 58;
      const protocolOf = (p: Uint8Array) => (family === 4 ? p[9] : p[6]);
      const got = new Map<string, { queue: number; packet: Uint8Array }>();
      const inbox = new Slots(64);
      await until(
        `${FLOWS} datagrams and ${PINGS} echo requests read from the queues`,
        () => {
          for (const [q, tun] of opened.entries()) {
            inbox.reset();
            const n = tun.read(inbox.buf, inbox.descs, 0, 64);
            for (let k = 0; k < n; k++) {
              const packet = inbox.packet(k);
              // Only ours, UDP datagrams and echo requests: not the stack's own chatter (IPv6
              // router solicitations, MLD reports).
              const l4 = family === 4 ? 20 : 40;
              const echoRequest = protocolOf(packet) === icmp && packet[l4] === (family === 4 ? 8 : 128);
              if (packet[0] >> 4 !== family || !(protocolOf(packet) === 17 || echoRequest)) continue;
              got.set(hex(packet), { queue: q, packet });
            }
          }
          const udp = [...got.values()].filter((g) => protocolOf(g.packet) === 17).length;
          return udp === FLOWS && got.size >= FLOWS + PINGS ? true : undefined;
        },
        10_000,
      );
      const reuseport = innerFlowSteering("vxlan", QUEUES, family);
      const expected = [...got.values()].map((g) => runClassicBpf(reuseport, datagram("vxlan", family, g.packet)));
      expect([...got.values()].map((g) => g.queue)).toEqual(expected);
      // The flows cover every queue, so a device that ignored the program would show.
      expect(new Set(expected).size).toBe(QUEUES);
    });

    it("refuses a program the verifier rejects, and says why", () => {
      // A program that returns a register it never set.
      const bad = Uint8Array.from([0x95, 0, 0, 0, 0, 0, 0, 0]);
      const dev = "stbad";
      const [q] = withNetns(ns.name, () => TunQueue.openQueues(dev, 2));
      queues.push(q);
      expect(() => q.setSteeringProgram(bad)).toThrow(/verifier refused it: .*R0 !read_ok/s);
    });
  },
);

/**
 * Whether a process without CAP_BPF and CAP_SYS_ADMIN is refused socket filters: not where
 * kernel.unprivileged_bpf_disabled is 0 (Debian and Ubuntu default to 2). There the test below
 * cannot run: skipped outside CI, and in CI (CI=true) a failure, as canUseNetns does.
 */
function kernelRefusesUnprivilegedBpf(): boolean {
  const refuses = readFileSync("/proc/sys/kernel/unprivileged_bpf_disabled", "utf8").trim() !== "0";
  if (!refuses && process.env.CI === "true")
    throw new Error(
      "kernel.unprivileged_bpf_disabled is 0, so no process is refused BPF, and CI=true forbids skipping",
    );
  return refuses;
}

describe.skipIf(!canUseNetns() || !kernelRefusesUnprivilegedBpf())(
  "a dataplane the kernel refuses the TUN steering program",
  () => {
    let ns: Netns;
    beforeAll(async () => {
      ns = await Netns.create("strp");
    });
    afterAll(async () => {
      await ns?.destroy();
    });

    it("keeps the device's flow table, and says why (a process without CAP_BPF and CAP_SYS_ADMIN)", async () => {
      await ns.ip("link set lo up");
      // The dataplane from dist, as the agent runs it, in a process that keeps CAP_NET_ADMIN (TUN
      // devices, sockets) but may not load BPF programs.
      const script = `
      const { UserspaceDataplane } = await import(${JSON.stringify(projectFile("dist", "src", "dataplane", "dataplane.js"))});
      const dp = new UserspaceDataplane({ format: "vxlan", tunName: "weft0", mtu: 1450,
        network: { addr: 0xc6130000, len: 16 }, subnet: { addr: 0xc6130100, len: 24 },
        listenAddr: 0x7f000001, port: 8472, vni: 1, vtepMac: new Uint8Array(6), workers: 2 });
      console.log(JSON.stringify(dp.counters().tunSteering));
      await dp.stop();`;
      const out = await ns.exec([
        "setpriv",
        "--bounding-set=-bpf,-sys_admin,-perfmon",
        "--inh-caps=-bpf,-sys_admin,-perfmon",
        "--",
        process.execPath,
        "--input-type=module",
        "-e",
        script,
      ]);
      const state = JSON.parse(out.trim().split("\n").at(-1)!);
      expect(state.by).toBe("flow-table");
      expect(state.reason).toMatch(/EPERM.*needs CAP_BPF.* or CAP_SYS_ADMIN/);
    });
  },
);
