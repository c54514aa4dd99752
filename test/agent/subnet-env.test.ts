// subnet.env byte for byte as flanneld writes it (WriteSubnetFile: per enabled family, IPv4 first,
// the network and the subnet's first address with its prefix, then MTU and IPMASQ), in each mode.
// The golden texts are written out by hand from flannel's writer; parse reads them back.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseSubnetEnv, subnetEnv, subnetFileError, writeSubnetEnv } from "../../src/agent/subnet-env.js";
import { parsePrefix } from "../../src/net/ipv4.js";
import { parsePrefix6 } from "../../src/net/ipv6.js";

const v4 = { network: parsePrefix("198.19.0.0/16"), subnet: parsePrefix("198.19.7.0/24") };
const v6 = { network: parsePrefix6("2001:2:0:8000::/49"), subnet: parsePrefix6("2001:2:0:8007::/64") };

describe("subnet.env", () => {
  it.each([
    [
      "IPv4-only",
      { v4, mtu: 1450, ipMasq: true },
      "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    ],
    [
      "dual-stack",
      { v4, v6, mtu: 1450, ipMasq: false },
      "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.7.1/24\nFLANNEL_IPV6_NETWORK=2001:2:0:8000::/49\nFLANNEL_IPV6_SUBNET=2001:2:0:8007::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
    ],
    [
      "IPv6-only",
      { v6, mtu: 1500, ipMasq: false },
      "FLANNEL_IPV6_NETWORK=2001:2:0:8000::/49\nFLANNEL_IPV6_SUBNET=2001:2:0:8007::1/64\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n",
    ],
    [
      "IPv6-only, a /122 of a /120 (flannel's default for small networks)",
      {
        v6: { network: parsePrefix6("2001:2:0:8000::/120"), subnet: parsePrefix6("2001:2:0:8000::40/122") },
        mtu: 1500,
        ipMasq: false,
      },
      "FLANNEL_IPV6_NETWORK=2001:2:0:8000::/120\nFLANNEL_IPV6_SUBNET=2001:2:0:8000::41/122\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n",
    ],
  ])("%s", (_, env, golden) => {
    expect(subnetEnv(env)).toBe(golden);
    expect(parseSubnetEnv(golden)).toEqual(env);
  });

  it("refuses a file without a network", () => {
    expect(() => parseSubnetEnv("FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")).toThrow(
      expect.objectContaining({ code: "AGENT_SUBNET_ENV_INVALID" }),
    );
  });
});

// A publish's write that fails for want of space or a writable file system is no wrong path: the
// advice fits the errno. Before, every failure said to pass a file, not a directory.
describe("AGENT_SUBNET_FILE_UNUSABLE", () => {
  it("says to pass a file, not a directory, for a directory", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-subnet-env-"));
    try {
      await expect(writeSubnetEnv(dir, { v4, mtu: 1450, ipMasq: false })).rejects.toMatchObject({
        code: "AGENT_SUBNET_FILE_UNUSABLE",
        message: expect.stringMatching(
          /\(EISDIR: .*\); pass the path of a file, not a directory, in a directory weft may/,
        ),
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("says the disk is full for ENOSPC, and read-only for EROFS", () => {
    let full: unknown;
    try {
      writeFileSync("/dev/full", "x");
    } catch (err) {
      full = err;
    }
    expect(subnetFileError("/run/flannel/subnet.env", "write it", full).message).toMatch(
      /^--subnet-file \/run\/flannel\/subnet\.env: cannot write it \(ENOSPC: .*\); its file system is full: free space on it$/,
    );
    const readOnly = Object.assign(new Error("EROFS: read-only file system, open '/run/flannel/subnet.env.tmp'"), {
      code: "EROFS",
    });
    expect(subnetFileError("/run/flannel/subnet.env", "write it", readOnly).message).toMatch(
      /\); its file system is read-only: mount it read-write, or pass a path on one that is \(flannel's is \/run\/flannel\/subnet\.env\)$/,
    );
  });
});
