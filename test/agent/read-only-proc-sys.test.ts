// An agent run as kube-flannel.yml runs flannel, in a container that is not privileged, finds
// /proc/sys read-only. The userspace backend's TUN device sysctls (which only keep the kernel's
// own packets off the device) are then skipped with one warning, as flannel skips its sysctls, and
// the node works: real wasm-vxlan agents, host2's with /proc/sys read-only.
import { describe, expect, it } from "vitest";
import { pingWhenRouted } from "../../src/lab/traffic.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, NETWORK } from "./support.js";

describe.skipIf(!canUseNetns())("an agent whose /proc/sys is read-only", () => {
  const env = agentLab({
    tag: "aro",
    hosts: 2,
    conf: () => ({ Network: NETWORK, Backend: { Type: "wasm-vxlan", Workers: 1 } }),
    setup: (a) => {
      a.readOnlyProcSys = a.host.name === "host2";
    },
    settled: { what: "its peer", check: (s) => s.ready && s.peers.length === 1 },
  });

  it("starts without weft.1's sysctls, says so once, and carries pod traffic both ways", async () => {
    const [a1, a2] = env.all;
    const warned = async (a: (typeof env.all)[number]) =>
      (await env.agents.logTail(a, 200)).split("\n").filter((l) => l.includes('"BACKEND_SYSCTLS_READ_ONLY"')).length;
    expect(await warned(a2)).toBe(1);
    expect(await warned(a1)).toBe(0);
    // Set on host1, left at the kernel's default on host2.
    const disableIpv6 = (a: (typeof env.all)[number]) =>
      a.host.ns.exec(["cat", "/proc/sys/net/ipv6/conf/weft.1/disable_ipv6"]).then((v) => v.trim());
    expect(await disableIpv6(a1)).toBe("1");
    expect(await disableIpv6(a2)).toBe("0");
    expect((await pingWhenRouted(a1.host.pods[0], a2.host.pods[0].addr)).received).toBe(2);
    expect((await pingWhenRouted(a2.host.pods[0], a1.host.pods[0].addr)).received).toBe(2);
  });
});
