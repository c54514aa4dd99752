// The gossip TCP listener's limits on real sockets (127.0.0.1): this node's own outbound exchanges
// never take the slots inbound ones need, and refused connections are counted in /metrics.
import { createServer, connect, type Socket } from "node:net";
import { describe, expect, it } from "vitest";
import { agentMetrics } from "../../src/agent/metrics.js";
import { UdpTcpTransport } from "../../src/control/transport/udp-tcp.js";
import { loopbackPlane } from "../support/loopback-plane.js";

describe("gossip stream limits", () => {
  it("outbound exchanges to peers that never answer leave every inbound slot free", async () => {
    const server = await UdpTcpTransport.open({ host: "127.0.0.1", port: 0, maxConnections: 2 });
    const client = await UdpTcpTransport.open({ host: "127.0.0.1", port: 0 });
    server.onExchange(async (_from, frame) => frame);
    // A peer that accepts connections and never answers: the server's exchanges to it hang.
    const held: Socket[] = [];
    const silent = createServer((s) => void held.push(s));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
    const port = (silent.address() as { port: number }).port;
    try {
      const hanging = Array.from({ length: 4 }, () =>
        server.exchange({ host: "127.0.0.1", port }, new Uint8Array([1]), 10_000).catch(() => undefined),
      );
      await new Promise((r) => setTimeout(r, 300));
      expect(held.length).toBe(4);
      const frame = new TextEncoder().encode("join");
      expect(Buffer.from(await client.exchange(server.local, frame, 5000))).toEqual(Buffer.from(frame));
      expect(server.stats.rejectedConnections).toBe(0);
      await server.close();
      await Promise.all(hanging);
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
      await Promise.all([server.close(), client.close()]);
    }
  });

  it("connections refused at the per-source limit show in /metrics", async () => {
    const { plane, close } = await loopbackPlane("a");
    const socks: Socket[] = [];
    try {
      const addr = plane.memberlist.localNode();
      // One more than the 8 connections one address may hold; each announces a frame it never sends.
      for (let i = 0; i < 9; i++) {
        const s = connect({ host: addr.host, port: addr.port });
        s.on("error", () => {});
        s.once("connect", () => s.write(Buffer.from([0, 0, 1, 0])));
        socks.push(s);
      }
      const registry = agentMetrics(
        plane,
        () => [],
        () => undefined,
        () => [],
        () => undefined,
      );
      let text = "";
      for (let i = 0; i < 50 && !/weft_gossip_transport_total\{event="rejectedConnections"\} [1-9]/.test(text); i++) {
        await new Promise((r) => setTimeout(r, 100));
        text = await registry.metrics();
      }
      expect(text).toMatch(/^weft_gossip_transport_total\{event="rejectedConnections"\} 1$/m);
    } finally {
      for (const s of socks) s.destroy();
      await close();
    }
  });
});
