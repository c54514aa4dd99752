// A tool weft runs inside a namespace (`ip netns exec NS nft`, iptables-restore) that is not
// installed: the error names the package to install, as it does where the tool runs without a
// namespace. Before, it said only "not installed". And one given a script on stdin that fails
// before reading it (an nft that cannot open its netlink socket), closing the pipe under weft's
// write: the call fails with what the tool said. Before, the write's EPIPE was an unhandled error,
// which ended the agent. The script is larger than a pipe's buffer, so the write is still under
// way when the tool exits. And one killed by a signal (an nft that SIGKILLs itself, as the OOM
// killer would): the call fails naming the signal, so the ip-masq and flannel sweeps say their
// listing failed. Before, it was "not installed", which those sweeps read as no nft, so no tables,
// and went on without a word.
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { removeFlannelMasq } from "../../src/kernel/flannel-masq.js";
import { Kernel } from "../../src/kernel/iproute.js";
import { syncIpMasq } from "../../src/kernel/ipmasq.js";
import { Netns } from "../../src/lab/netns.js";
import { parsePrefix } from "../../src/net/ipv4.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("a kernel tool missing in a namespace, or failing before it reads its script", () => {
  let ns: Netns;
  // A PATH with `ip` alone: `ip netns exec` then finds neither nft nor iptables-restore.
  const bin = mkdtempSync(join(tmpdir(), "weft-tools-"));
  symlinkSync("/usr/sbin/ip", join(bin, "ip"));
  // Beside it, an nft that fails at once.
  const failing = mkdtempSync(join(tmpdir(), "weft-tools-"));
  writeFileSync(
    join(failing, "nft"),
    "#!/bin/sh\necho 'Error: cannot open netlink socket (by the test)' >&2\nexit 1\n",
  );
  chmodSync(join(failing, "nft"), 0o755);
  const killed = mkdtempSync(join(tmpdir(), "weft-tools-"));
  writeFileSync(join(killed, "nft"), "#!/bin/sh\nkill -KILL $$\n");
  chmodSync(join(killed, "nft"), 0o755);
  const path = process.env.PATH;
  beforeAll(async () => {
    ns = await Netns.create("ktm");
  });
  afterAll(async () => {
    process.env.PATH = path;
    rmSync(bin, { recursive: true, force: true });
    rmSync(failing, { recursive: true, force: true });
    rmSync(killed, { recursive: true, force: true });
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

  it("a tool that exits without reading its script: fails with the tool's message, and nothing else goes wrong", async () => {
    process.env.PATH = `${failing}:${path}`;
    try {
      const script = "add table ip weft-test\n".repeat(64 * 1024); // 1.4 MiB
      await expect(ns.kernel.nft(script)).rejects.toMatchObject({
        code: "KERNEL_COMMAND_FAILED",
        message: expect.stringContaining("cannot open netlink socket (by the test)"),
      });
    } finally {
      process.env.PATH = path;
    }
  });

  it("a tool killed by a signal: fails naming it, and the sweeps that list nft tables say so", async () => {
    process.env.PATH = `${killed}:${path}`;
    try {
      // In the namespace (`ip netns exec` runs nft in its place) and without one (nft dies before
      // it looks at anything).
      for (const kernel of [ns.kernel, new Kernel()])
        await expect(kernel.nftTables()).rejects.toMatchObject({
          code: "KERNEL_COMMAND_FAILED",
          message: expect.stringMatching(
            /^`(ip netns exec \S+ )?nft -j list tables` was killed by SIGKILL, so what it did is not known: run it by hand to see why$/,
          ),
        });
      await expect(syncIpMasq(ns.kernel, [])).rejects.toMatchObject({
        code: "KERNEL_COMMAND_FAILED",
        message: expect.stringContaining("killed by SIGKILL"),
      });
      const flannel = await removeFlannelMasq(ns.kernel, [parsePrefix("198.19.0.0/16")]);
      expect(flannel.failures).toEqual([
        { command: "nft list tables", message: expect.stringContaining("killed by SIGKILL") },
      ]);
    } finally {
      process.env.PATH = path;
    }
  });
});
