// A real control plane alone on 127.0.0.1 (gossip port chosen by the kernel, a fresh state dir,
// its own key), for tests of what the agent builds on one (its /metrics registry).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { ControlPlane } from "../../src/control/control-plane.js";
import { generateKey, Keyring } from "../../src/control/gossip/keyring.js";
import { SubnetSpace } from "../../src/control/lease/slots.js";

/** Starts node `name` as the seed of a cluster of its own; `close` stops it and removes its state dir. */
export async function loopbackPlane(name: string): Promise<{ plane: ControlPlane; close(): Promise<void> }> {
  const stateDir = await mkdtemp(join(tmpdir(), "weft-plane-"));
  const plane = await ControlPlane.start({
    name,
    join: [],
    seeds: [name],
    space: SubnetSpace.fromConfig({ Network: "198.19.0.0/16" }),
    bindAddr: "127.0.0.1",
    gossipPort: 0,
    stateDir,
    keyring: new Keyring(generateKey()),
    logger: pino({ level: "silent" }),
  }).catch(async (err) => {
    await rm(stateDir, { recursive: true, force: true });
    throw err;
  });
  return {
    plane,
    close: async () => {
      await plane.stop(false);
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}
