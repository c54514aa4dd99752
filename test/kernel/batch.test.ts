// `ip -force -batch` on a real kernel: every line the kernel accepts is applied even where
// iproute2 gives up early (`ip neigh` exits at the first refusal, -force or not, without saying
// which line), so one vanished neighbour never holds up the other peers' entries.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { Netns } from "../../src/lab/netns.js";
import { canUseNetns } from "../support/netns.js";

describe.skipIf(!canUseNetns())("ip -force -batch", () => {
  let ns: Netns;
  beforeAll(async () => {
    ns = await Netns.create("kbt");
    await ns.ip("link add kb0 type veth peer name kb1");
    await ns.ip("link set kb0 up");
    await ns.ip("link set kb1 up");
  });
  afterAll(() => ns?.destroy());

  const neighs = async () =>
    (await ns.ip("neigh show dev kb0"))
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean)
      .sort();

  it("applies the lines after a refused neigh delete, and reports only what is still refused", async () => {
    const failures = await ns.kernel.ipBatchForce([
      "neigh replace 198.18.0.97 lladdr 02:00:00:00:00:97 dev kb0 nud permanent",
      // Deleted by someone else between reading and writing: the kernel refuses it.
      "neigh del 198.18.0.99 dev kb0",
      "neigh replace 198.18.0.98 lladdr 02:00:00:00:00:98 dev kb0 nud permanent",
      "neigh replace 198.18.0.96 lladdr 02:00:00:00:00:96 dev kb9 nud permanent",
      "route replace 198.19.5.0/24 dev kb0",
    ]);
    expect(await neighs()).toEqual([
      "198.18.0.97 lladdr 02:00:00:00:00:97 PERMANENT",
      "198.18.0.98 lladdr 02:00:00:00:00:98 PERMANENT",
    ]);
    expect(await ns.ip("-4 route show dev kb0")).toContain("198.19.5.0/24");
    // The delete's goal holds (nothing there); the line naming a missing device is refused.
    expect(failures).toEqual([
      expect.objectContaining({
        line: 4,
        command: "neigh replace 198.18.0.96 lladdr 02:00:00:00:00:96 dev kb9 nud permanent",
      }),
    ]);
  });
  it("takes a route or FDB delete that finds nothing as done, not as a failure", async () => {
    // Deleted by someone else between reading and writing: the goal holds.
    expect(await ns.kernel.ipBatchForce(["route del 198.19.6.0/24 dev kb0"])).toEqual([]);
    await ns.ip("link add kbvx type vxlan id 42 dstport 4789 local 198.18.0.1 nolearning");
    expect(await ns.kernel.bridgeBatchForce(["fdb del 02:00:00:00:00:42 dev kbvx dst 198.18.0.42 self"])).toEqual([]);
    // A delete refused for another reason still is a failure.
    expect(await ns.kernel.bridgeBatchForce(["fdb del 02:00:00:00:00:42 dev kb9 dst 198.18.0.42 self"])).toEqual([
      expect.objectContaining({ line: 1 }),
    ]);
  });
  it("finds the lines a stopped batch left by halving the rest, not one call per line", async () => {
    const addr = (i: number) => `198.18.0.${100 + i}`;
    const mac = (i: number) => `02:00:00:00:01:${(100 + i).toString(16)}`;
    const lines = Array.from(
      { length: 40 },
      (_, i) => `neigh replace ${addr(i)} lladdr ${mac(i)} dev kb0 nud permanent`,
    );
    // Refused: nothing there to delete (the batch stops), and a device that does not exist.
    lines[9] = "neigh del 198.18.0.199 dev kb0";
    lines[29] = `neigh replace ${addr(29)} lladdr ${mac(29)} dev kb9 nud permanent`;
    const calls = vi.spyOn(ns.kernel as unknown as { forceBatch: () => Promise<unknown> }, "forceBatch");
    const failures = await ns.kernel.ipBatchForce(lines);
    const applied = new Set((await neighs()).map((l) => l.split(" ")[0]));
    const wanted = lines.flatMap((l, i) => (l.startsWith("neigh replace") && i !== 29 ? [addr(i)] : []));
    expect(wanted.filter((a) => !applied.has(a))).toEqual([]);
    expect(failures).toEqual([expect.objectContaining({ line: 30, command: lines[29] })]);
    // One call per line after the stop was 32 calls; halving needs about 2·log2(31).
    expect(calls.mock.calls.length).toBeLessThanOrEqual(16);
    calls.mockRestore();
  });
});
