// Real sockets on loopback: five memberlists on 127.0.0.1 (ports picked free by binding 0) join,
// converge, detect a killed member, take it back after a restart on the same port, and refuse a
// node with another key. Every wait is bounded; timings are never asserted, only outcomes.
import { createSocket } from "node:dgram";
import { connect } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { makeConfig } from "../../src/control/gossip/config.js";
import type { Delegate } from "../../src/control/gossip/delegate.js";
import { generateKey, Keyring } from "../../src/control/gossip/keyring.js";
import { Memberlist } from "../../src/control/gossip/memberlist.js";
import type { Message } from "../../src/control/gossip/messages.js";
import { Wire } from "../../src/control/gossip/net.js";
import { newCounters, type GossipLogger } from "../../src/control/gossip/observability.js";
import { WeftError } from "../../src/errors.js";
import { RealClock, realRandom } from "../../src/control/transport/real-clock.js";
import { UdpTcpTransport } from "../../src/control/transport/udp-tcp.js";

// Loopback is fast and lossless: shorter rounds than the "local" profile keep the test short.
const FAST = {
  probeIntervalMs: 200,
  probeTimeoutMs: 100,
  gossipIntervalMs: 50,
  suspicionMult: 2,
  pushPullIntervalMs: 2000,
  reconnectIntervalMs: 1000,
  tcpTimeoutMs: 1000,
  gossipToTheDeadMs: 5000,
};
const KEY = generateKey();

interface Node {
  name: string;
  ml: Memberlist;
  transport: UdpTcpTransport;
  received: string[];
}
const running: Node[] = [];

async function start(
  name: string,
  keyring = new Keyring(KEY),
  port = 0,
  protocolVersion?: number,
  logger?: GossipLogger,
): Promise<Node> {
  const transport = await UdpTcpTransport.open({ host: "127.0.0.1", port });
  const received: string[] = [];
  const delegate: Delegate = {
    nodeMeta: () => new TextEncoder().encode(`meta-${name}`),
    notifyMsg: (from, msg) => received.push(`${from}:${new TextDecoder().decode(msg)}`),
    getBroadcasts: () => [],
    localState: () => new Uint8Array(0),
    mergeRemoteState: () => {},
  };
  const ml = new Memberlist(makeConfig("local", name, { ...FAST, protocolVersion }), {
    clock: new RealClock(),
    transport,
    random: realRandom,
    keyring,
    delegate,
    logger,
  });
  const node = { name, ml, transport, received };
  running.push(node);
  return node;
}

/** Sends `frame` `count` times to 127.0.0.1:`port` from a new socket bound to `host`. */
async function sendFrom(host: string, port: number, frame: Uint8Array, count: number): Promise<void> {
  const udp = createSocket("udp4");
  await new Promise<void>((r) => udp.bind(0, host, () => r()));
  for (let i = 0; i < count; i++) await new Promise<void>((r) => udp.send(frame, port, "127.0.0.1", () => r()));
  udp.close();
}

async function until(what: string, pred: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const stateOf = (observer: Node, subject: string) => observer.ml.allMembers().find((v) => v.name === subject);
const seesAllAlive = (nodes: Node[]) => () =>
  nodes.every((n) => {
    const alive = n.ml
      .members()
      .filter((v) => v.state === "alive")
      .map((v) => v.name);
    return alive.length === nodes.length && nodes.every((o) => alive.includes(o.name));
  });

afterEach(async () => {
  await Promise.all(running.splice(0).map((n) => n.ml.shutdown()));
});

describe("memberlist on real sockets (127.0.0.1)", () => {
  it("a version-2 node joins through a version-1 node (a refused pushPull2 falls back), and both keep talking", async () => {
    const old = await start("old", undefined, 0, 1);
    const a = await start("new-a");
    const b = await start("new-b");
    expect(await a.ml.join([old.transport.local])).toBe(1);
    expect(await b.ml.join([a.transport.local])).toBe(1);
    await until("all three see each other alive", seesAllAlive([old, a, b]));
    // The refusal is real: the version-1 node's decoder dropped the pushPull2 stream frame.
    expect(old.ml.counters().dropped.garbage).toBeGreaterThan(0);
    expect(a.ml.counters().sent.pushPull.messages).toBeGreaterThan(0);
    // The two version-2 nodes used version 2 between them.
    expect(b.ml.counters().sent.pushPull2.messages).toBeGreaterThan(0);
    // No packet to the version-1 node is refused: what it drops from now on are at most stream probes.
    const before = old.ml.counters();
    await new Promise((r) => setTimeout(r, 1500));
    const after = old.ml.counters();
    expect(after.frames.packetsReceived).toBeGreaterThan(before.frames.packetsReceived);
    expect(after.dropped.garbage - before.dropped.garbage).toBeLessThanOrEqual(
      after.frames.streamsReceived - before.frames.streamsReceived,
    );
    expect(seesAllAlive([old, a, b])()).toBe(true);
  });

  it("a version-2 member's closed stream (its transport evicting under a flood) is no refusal: it is not noted as speaking 1", async () => {
    const a = await start("v2-a");
    const b = await start("v2-b");
    expect(await a.ml.join([b.transport.local])).toBe(1);
    await until("both see each other alive", seesAllAlive([a, b]));
    // b's records came in version 2 (its pushPull2 reply): a knows b speaks 2.
    // One exchange closed as b's transport closes an evicted request.
    const exchange = a.transport.exchange.bind(a.transport);
    a.transport.exchange = () => {
      a.transport.exchange = exchange;
      return Promise.reject(new WeftError("TRANSPORT_CLOSED", "stream closed before the reply"));
    };
    const sentV1 = a.ml.counters().sent.pushPull.messages;
    expect(await a.ml.join([b.transport.local])).toBe(0);
    // Before, a made the exchange again in version 1 and noted b as speaking 1.
    expect(a.ml.counters().sent.pushPull.messages).toBe(sentV1);
    const sentV2 = a.ml.counters().sent.pushPull2.messages;
    expect(await a.ml.join([b.transport.local])).toBe(1);
    expect(a.ml.counters().sent.pushPull2.messages).toBe(sentV2 + 1);
  });

  it("five nodes join and converge; a killed one is declared dead; restarted on its port it rejoins", async () => {
    const nodes: Node[] = [];
    for (let i = 0; i < 5; i++) nodes.push(await start(`node${i}`));
    const seed = nodes[0].transport.local;
    const joined = await Promise.all(nodes.slice(1).map((n) => n.ml.join([seed])));
    expect(joined).toEqual([1, 1, 1, 1]);
    await until("all five see each other alive", seesAllAlive(nodes));
    for (const n of nodes) {
      expect(new TextDecoder().decode(stateOf(n, "node3")!.meta)).toBe("meta-node3");
    }

    // Kill node3 without a word (closes its sockets, no leave broadcast).
    const victim = nodes[3];
    const { port } = victim.transport.local;
    const oldIncarnation = victim.ml.localNode().incarnation;
    await victim.ml.shutdown();
    const rest = nodes.filter((n) => n !== victim);
    await until("the others declare node3 dead", () => rest.every((n) => stateOf(n, "node3")?.state === "dead"));

    // Restart on the same port; it rejoins above its old incarnation.
    const again = await start("node3", new Keyring(KEY), port);
    expect(await again.ml.join([seed])).toBe(1);
    const all = [...rest, again];
    await until("node3 is back everywhere", seesAllAlive(all));
    for (const n of rest) expect(stateOf(n, "node3")!.incarnation).toBeGreaterThan(oldIncarnation);

    // Direct messages reach the layer above, reliably and best effort.
    await rest[0].ml.sendReliable("node3", new TextEncoder().encode("reliable"));
    expect(again.received).toContain("node0:reliable");
    rest[1].ml.sendBestEffort("node3", new TextEncoder().encode("datagram"));
    await until("the datagram arrives", () => again.received.includes("node1:datagram"), 5000);
  });

  it("refuses a node with another key; garbage and oversized frames are dropped and counted", async () => {
    const a = await start("a");
    const b = await start("b");
    expect(await b.ml.join([a.transport.local])).toBe(1);
    await until("a and b converge", seesAllAlive([a, b]));

    const intruder = await start("intruder", new Keyring(generateKey()));
    expect(await intruder.ml.join([a.transport.local, b.transport.local])).toBe(0);
    expect(a.ml.counters().dropped.badKey + b.ml.counters().dropped.badKey).toBeGreaterThanOrEqual(2);

    // Raw garbage over UDP, and a stream announcing a frame larger than the bound.
    const udp = createSocket("udp4");
    await new Promise<void>((resolve) =>
      udp.send(
        Buffer.from("definitely not a frame, but long enough to pass"),
        a.transport.local.port,
        "127.0.0.1",
        () => resolve(),
      ),
    );
    udp.close();
    const sock = connect(a.transport.local.port, "127.0.0.1");
    sock.on("error", () => {});
    sock.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    await until("garbage counted", () => a.ml.counters().dropped.garbage + a.ml.counters().dropped.badKey >= 1, 5000);
    await until("oversized stream refused", () => a.transport.stats.oversizeStreams === 1, 5000);
    sock.destroy();

    // Still two members, the intruder unknown to both, for a few more rounds.
    await new Promise((r) => setTimeout(r, 1000));
    expect(
      a.ml
        .members()
        .map((m) => m.name)
        .sort(),
    ).toEqual(["a", "b"]);
    expect(
      b.ml
        .members()
        .map((m) => m.name)
        .sort(),
    ).toEqual(["a", "b"]);
    expect(intruder.ml.members().map((m) => m.name)).toEqual(["intruder"]);
  });

  it("slow clients from one address take at most their share of stream slots and are cut off by the deadline while trickling", async () => {
    const server = await UdpTcpTransport.open({ host: "127.0.0.1", port: 0, inboundTimeoutMs: 1500 });
    const client = await UdpTcpTransport.open({ host: "127.0.0.1", port: 0 });
    server.onExchange(async (_from, frame) => frame);
    // 64 connections from 127.0.0.2, each announcing a 1 KiB frame and sending one byte every 100 ms:
    // an idle timeout would never fire on them.
    const attackers = Array.from({ length: 64 }, () => {
      const sock = connect({ port: server.local.port, host: "127.0.0.1", localAddress: "127.0.0.2" });
      sock.on("error", () => {});
      const closed = new Promise<void>((r) => sock.once("close", () => r()));
      const connected = new Promise<void>((r) => {
        sock.once("connect", () => r());
        sock.once("close", () => r());
      });
      sock.once("connect", () => sock.write(Buffer.from([0, 0, 4, 0])));
      const trickle = setInterval(() => sock.writable && sock.write(Buffer.from([0])), 100);
      return { sock, closed, connected, trickle };
    });
    try {
      // All of them connected (and the server has seen them) before the peer comes.
      await Promise.all(attackers.map((a) => a.connected));
      await new Promise((r) => setTimeout(r, 300));
      const frame = new TextEncoder().encode("push-pull from a peer");
      expect(Buffer.from(await client.exchange(server.local, frame, 5000))).toEqual(Buffer.from(frame));
      await Promise.race([
        Promise.all(attackers.map((a) => a.closed)),
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error("trickling connections still open after 15 s")), 15_000),
        ),
      ]);
      // Each over the address's 8 closed its oldest: the address held at most 8 at once.
      expect(server.stats.evictedForSlot).toBeGreaterThanOrEqual(56);
      expect(server.stats.rejectedConnections).toBe(0);
    } finally {
      for (const a of attackers) {
        clearInterval(a.trickle);
        a.sock.destroy();
      }
      await Promise.all([server.close(), client.close()]);
    }
  });

  it("logs frames under a key it does not hold once per address in a minute, naming the key id, for a bounded number of addresses", async () => {
    const warned: Array<Record<string, unknown>> = [];
    const quiet = () => {};
    const logger = { debug: quiet, info: quiet, error: quiet, warn: (o: Record<string, unknown>) => warned.push(o) };
    const a = await start("a", new Keyring(KEY), 0, undefined, logger as never);
    const otherRing = new Keyring(generateKey());
    const b = await start("b", otherRing);
    // A node that missed a rotation step: its joins (stream requests) are refused...
    expect(await b.ml.join([a.transport.local])).toBe(0);
    expect(await b.ml.join([a.transport.local])).toBe(0);
    // ...and so are its packets, 20 from one more port of the same address, then one from each of
    // 30 other addresses (127.0.0.0/8 is all this host's).
    const frame = otherRing.seal(new Uint8Array(16), "packet");
    await sendFrom("127.0.0.1", a.transport.local.port, frame, 20);
    for (let i = 2; i < 32; i++) await sendFrom(`127.0.0.${i}`, a.transport.local.port, frame, 1);
    await until("a dropped them all", () => a.ml.counters().dropped.badKey >= 2 + 20 + 30, 5000);
    const unknown = warned.filter((w) => w.code === "GOSSIP_FRAME_UNKNOWN_KEY");
    // Once for 127.0.0.1 (b's streams and the 20 packets), then 15 of the others: 16 a minute at most.
    expect(unknown.filter((w) => String(w.from).startsWith("127.0.0.1:"))).toHaveLength(1);
    expect(unknown).toHaveLength(16);
    expect(unknown[0]).toMatchObject({ keyId: otherRing.ids().primary, held: new Keyring(KEY).ids().installed });
    expect(new Set(unknown.map((w) => String(w.from).split(":")[0])).size).toBe(16);
  });

  it("logs an address again after a minute, and clears expired addresses to log new ones once 16 are held", async () => {
    const warned: string[] = [];
    const quiet = () => {};
    const logger = {
      debug: quiet,
      info: quiet,
      error: quiet,
      warn: (o: Record<string, unknown>) => warned.push(String(o.from).split(":")[0]),
    };
    // The window's time is the wire's clock's: stepped here, a minute in no time.
    const real = new RealClock();
    let now = real.now();
    const clock = {
      now: () => now,
      wallNow: () => now,
      setTimer: real.setTimer.bind(real),
      cancel: real.cancel.bind(real),
    };
    const transport = await UdpTcpTransport.open({ host: "127.0.0.1", port: 0 });
    const counters = newCounters();
    const wire = new Wire({
      config: makeConfig("local", "w", FAST),
      clock,
      transport,
      keyring: new Keyring(KEY),
      counters,
      logger: logger as never,
      piggyback: () => [],
    });
    wire.onPacket(() => {});
    const frame = new Keyring(generateKey()).seal(new Uint8Array(16), "packet");
    let sent = 0;
    const from = async (...hosts: number[]) => {
      for (const h of hosts) await sendFrom(`127.0.0.${h}`, transport.local.port, frame, 1);
      sent += hosts.length;
      await until("all dropped", () => counters.dropped.badKey === sent, 5000);
    };
    const range = (first: number, last: number) => Array.from({ length: last - first + 1 }, (_, i) => first + i);
    try {
      await from(...range(1, 16));
      expect(warned).toEqual(range(1, 16).map((h) => `127.0.0.${h}`));
      now += 30_000;
      // Within the minute: neither a held address again nor a 17th.
      await from(1, 17);
      expect(warned).toHaveLength(16);
      now += 30_000;
      // A minute after its line, 127.0.0.1 again; the 17th finds the 15 others expired, cleared.
      await from(1, ...range(17, 31), 32);
      expect(warned.slice(16)).toEqual([1, ...range(17, 31)].map((h) => `127.0.0.${h}`));
    } finally {
      await transport.close();
    }
  });

  it("a packet of many requests from a member with the key is answered once, not once per request", async () => {
    const a = await start("a");
    // The member: a transport and the wire of the cluster's key, to write packets no agent sends.
    const evil = await UdpTcpTransport.open({ host: "127.0.0.1", port: 0 });
    const config = makeConfig("local", "evil", FAST);
    const counters = newCounters();
    const wire = new Wire({
      config,
      clock: new RealClock(),
      transport: evil,
      keyring: new Keyring(KEY),
      counters,
      logger: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} } as never,
      piggyback: () => [],
    });
    const pullReplies: number[] = [];
    wire.onPacket((_from, envelope) => {
      for (const { message } of envelope.messages) if (message.kind.startsWith("pullReply")) pullReplies.push(1);
    });
    // A host that is no member: indirect pings name it as their target's address.
    const stranger = createSocket("udp4");
    let reflected = 0;
    stranger.on("message", () => reflected++);
    await new Promise<void>((r) => stranger.bind(0, "127.0.0.1", () => r()));
    try {
      // Joins as a member at its own address.
      const me = { name: "evil", host: "127.0.0.1", port: evil.local.port, incarnation: 1, state: "alive" as const };
      await wire.request(
        a.transport.local,
        {
          kind: "pushPull",
          join: true,
          nodes: [{ ...me, meta: new Uint8Array(0), stateAgeMs: 0 }],
          userState: new Uint8Array(0),
        },
        2000,
      );
      await until("a knows the member", () => stateOf(a, "evil")?.state === "alive");
      const times = <T extends Message>(m: T): T[] => Array.from({ length: 10 }, () => m);
      const port = (stranger.address() as { port: number }).port;
      wire.send(
        a.transport.local,
        times({ kind: "indirectPing", seq: 1, target: "x", host: "127.0.0.1", port, wantNack: false }),
        false,
      );
      wire.send(
        a.transport.local,
        times({ kind: "pull", salt: 1, windowMs: 60_000, digest: new Uint8Array(8) }),
        false,
      );
      await until("a answered", () => reflected > 0 && pullReplies.length > 0, 5000);
      await new Promise((r) => setTimeout(r, 500));
      expect({ reflected, pullReplies: pullReplies.length }).toEqual({ reflected: 1, pullReplies: 1 });
      expect(a.ml.counters().dropped.extraRequest).toBe(18);
    } finally {
      stranger.close();
      await evil.close();
    }
  });
});
