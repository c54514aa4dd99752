// `ip -force -batch` on a real kernel: every line the kernel accepts is applied even where
// iproute2 gives up early (`ip neigh` exits at the first refusal, -force or not, without saying
// which line), so one vanished neighbour never holds up the other peers' entries.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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
});
