// PeerSync tells its `holding` callback (the agent's keepPeerTotals) the control plane's peers
// at each sync, also while the family has no backend (a lane down, waiting for a lease or a
// restart): a peer gone meanwhile has its saved dataplane totals dropped then, before a node can
// take its name. Before, a sync without a backend returned first, and a name reused while the lane
// was down inherited the old peer's counts once a backend ran again.
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { PeerSync } from "../../src/agent/peer-sync.js";
import type { BackendPeer } from "../../src/backends/backend.js";

const peer = (name: string, i: number): BackendPeer => ({
  name,
  subnet: { addr: 0xc6130000 + i * 256, len: 24 },
  underlay: 0xc6120000 + i,
  backend: { type: "wasm-vxlan" },
});

describe("PeerSync without a backend", () => {
  it("tells holding the peers' names at each sync", async () => {
    let peers = [peer("host2", 2), peer("host3", 3)];
    const told: string[][] = [];
    const sync = new PeerSync(
      () => peers,
      () => undefined,
      pino({ level: "silent" }),
      (peers) => told.push([...peers.keys()].sort()),
    );
    await sync.kick();
    peers = [peer("host3", 3)];
    await sync.kick();
    expect(told).toEqual([["host2", "host3"], ["host3"]]);
    expect(sync.size).toBe(0);
  });
});
