// An agent without --ip-masq on a host whose nft is installed but cannot work (nf_tables off, or
// no right to it in a container): every nft command fails, as a fake nft first on its PATH makes
// them. Each publish tries to drop an earlier run's weft tables (here one such table is there),
// which fails: that only warns (AGENT_STALE_IP_MASQ), and the agent starts and is ready. Before,
// the failed drops failed the publish, and the start with it.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import { ipMasqScript } from "../../src/kernel/ipmasq.js";
import { LAB_POD_NETWORK } from "../../src/lab/cluster.js";
import { parsePrefix } from "../../src/net/ipv4.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, coded, netConf, nftTables } from "./support.js";

const bin = mkdtempSync(join(tmpdir(), "weft-anu-"));
writeFileSync(
  join(bin, "nft"),
  "#!/bin/sh\necho 'Error: Could not process rule: Operation not permitted (nf_tables unusable, by the test)' >&2\nexit 1\n",
);
chmodSync(join(bin, "nft"), 0o755);
afterAll(() => rmSync(bin, { recursive: true, force: true }));

describe.skipIf(!canUseNetns())("agent without --ip-masq, nft there but unusable", () => {
  const env = agentLab({
    tag: "anu",
    hosts: 1,
    conf: () => netConf("vxlan"),
    settled: { what: "ready", check: (s) => s.ready },
    // An earlier run's table, written with the test's own (working) nft.
    beforeStart: (lab) =>
      lab.hosts[0].ns.kernel.nft(ipMasqScript({ network: LAB_POD_NETWORK, subnet: parsePrefix("198.19.9.0/24") })),
    setup: (a) => {
      a.env = { PATH: `${bin}:${process.env.PATH}` };
    },
  });

  it("starts and is ready; the failed removal of weft's tables is logged as AGENT_STALE_IP_MASQ", async () => {
    const [a] = env.all;
    expect(await agentRequest(a.stateDir, "GET", "/readyz")).toBe("ready\n");
    const warned = await coded(a.dir, 0, "AGENT_STALE_IP_MASQ");
    expect(warned.length).toBeGreaterThan(0);
    expect(warned[0]).toMatchObject({
      level: 40,
      err: { message: expect.stringContaining("Operation not permitted") },
    });
    // The agent's nft could not drop it: it is still there, as the warning says it may be.
    expect(await nftTables(a.host)).toEqual(["ip weft"]);
  });
});
