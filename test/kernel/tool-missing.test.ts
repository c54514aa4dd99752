// A tool weft runs inside a namespace (`ip netns exec NS nft`, iptables-restore) that is not
// installed: the error names the package to install, as it does where the tool runs without a
// namespace. Before, it said only "not installed".
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Netns } from "../../src/lab/netns.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("a kernel tool missing in a namespace", () => {
  let ns: Netns;
  // A PATH with `ip` alone: `ip netns exec` then finds neither nft nor iptables-restore.
  const bin = mkdtempSync(join(tmpdir(), "weft-tools-"));
  symlinkSync("/usr/sbin/ip", join(bin, "ip"));
  const path = process.env.PATH;
  beforeAll(async () => {
    ns = await Netns.create("ktm");
  });
  afterAll(async () => {
    process.env.PATH = path;
    rmSync(bin, { recursive: true, force: true });
    await ns?.destroy();
  });

  it("says which package brings nft and iptables-restore", async () => {
    process.env.PATH = bin;
    try {
      await expect(ns.kernel.nft("list tables\n")).rejects.toMatchObject({
        code: "KERNEL_TOOL_MISSING",
        message: "cannot run nft: not installed; install iproute2 and nftables (apt-get install iproute2 nftables)",
      });
      await expect(ns.kernel.iptablesRestore(4, "*nat\nCOMMIT\n")).rejects.toMatchObject({
        code: "KERNEL_TOOL_MISSING",
        message: "cannot run iptables-restore: not installed; install iptables (apt-get install iptables)",
      });
    } finally {
      process.env.PATH = path;
    }
  });
});
