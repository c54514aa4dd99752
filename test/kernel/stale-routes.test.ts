// The sweep of stale gateway routes (removeStaleGatewayRoutes) in a namespace of the test's own,
// the underlay sr0 with a multipath default route via 198.18.0.1 and 198.18.0.2, weft's subnets
// /24 of 198.19.0.0/16. Removed: a node subnet's route via a peer, and one longer than weft's
// subnets (a migrated flannel's /26) where the caller asks for longer ones (the live network of a
// userspace backend). Kept: a route via either default gateway (an admin's; before, a multipath
// route's gateways were not read, so via 198.18.0.2 went), a shorter one (an aggregate), one longer
// than any subnet flannel or weft gives (/31: an admin's), and, where the caller asks for the
// subnet length alone (a dropped network's old routes), a longer one (before, it went). Where the default routes cannot be read (an `ip` first on PATH that fails that
// read alone), nothing is removed and each route that may be stale is said with its command (also
// those via a default gateway, which cannot be told apart then): before, the whole sweep failed.
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { removeStaleGatewayRoutes } from "../../src/kernel/stale-routes.js";
import { Netns } from "../../src/lab/netns.js";
import { formatAnyPrefix } from "../../src/net/ip.js";
import { parsePrefix } from "../../src/net/ipv4.js";
import { canUseNetns } from "../support/netns.js";

const PODS = parsePrefix("198.19.0.0/16");
const STALE = ["198.19.5.0/24 via 198.18.0.12 dev sr0", "198.19.6.64/26 via 198.18.0.13 dev sr0"];
const KEPT = [
  "198.19.7.0/24 via 198.18.0.2 dev sr0",
  "198.19.8.0/24 via 198.18.0.1 dev sr0",
  "198.19.16.0/20 via 198.18.0.14 dev sr0",
  "198.19.9.0/31 via 198.18.0.15 dev sr0",
];

describe.skipIf(!canUseNetns())("stale gateway routes", () => {
  let ns: Netns;
  const routes = async () =>
    (await ns.ip("-4 route show root 198.19.0.0/16"))
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
  beforeAll(async () => {
    ns = await Netns.create("ksr");
    await ns.ip("link add sr0 type veth peer name sr1");
    await ns.ip("addr add 198.18.0.250/24 dev sr0");
    await ns.ip("link set sr0 up");
    await ns.ip("link set sr1 up");
    await ns.ip("route add default nexthop via 198.18.0.1 dev sr0 nexthop via 198.18.0.2 dev sr0");
  });
  afterAll(() => ns?.destroy());

  it("removes node subnets' routes, longer ones too, and keeps those via any default gateway, shorter ones and those beyond /30", async () => {
    for (const r of [...STALE, ...KEPT]) await ns.ip(`route add ${r}`);
    const { removed, failures } = await removeStaleGatewayRoutes(ns.kernel, PODS, 24, "sr0", { longer: true });
    expect(failures).toEqual([]);
    expect(removed.map((r) => formatAnyPrefix(r.dst)).sort()).toEqual(["198.19.5.0/24", "198.19.6.64/26"]);
    expect((await routes()).sort()).toEqual([...KEPT].sort());
  });

  it("the subnet length alone: keeps a longer route", async () => {
    for (const r of STALE) await ns.ip(`route add ${r}`);
    const { removed, failures } = await removeStaleGatewayRoutes(ns.kernel, PODS, 24, "sr0", { longer: false });
    expect(failures).toEqual([]);
    expect(removed.map((r) => formatAnyPrefix(r.dst))).toEqual(["198.19.5.0/24"]);
    expect((await routes()).sort()).toEqual([STALE[1], ...KEPT].sort());
    await ns.ip(`route del ${STALE[1]}`);
  });

  it("the default routes unreadable: removes nothing, and says each route it could not classify", async () => {
    for (const r of STALE) await ns.ip(`route add ${r}`);
    const real = (await ns.exec(["sh", "-c", "command -v ip"])).trim();
    const bin = await mkdtemp(join(tmpdir(), "weft-ksr-"));
    await writeFile(
      join(bin, "ip"),
      `#!/bin/sh\ncase " $* " in *" route show table main default "*) echo "Error: refused by the test" >&2; exit 2 ;; esac\nexec '${real}' "$@"\n`,
    );
    await chmod(join(bin, "ip"), 0o755);
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      const { removed, failures } = await removeStaleGatewayRoutes(ns.kernel, PODS, 24, "sr0", { longer: true });
      expect(removed).toEqual([]);
      expect(failures.map((f) => f.command).sort()).toEqual([
        "route del 198.19.5.0/24 via 198.18.0.12 dev sr0",
        "route del 198.19.6.64/26 via 198.18.0.13 dev sr0",
        "route del 198.19.7.0/24 via 198.18.0.2 dev sr0",
        "route del 198.19.8.0/24 via 198.18.0.1 dev sr0",
      ]);
      expect(failures[0].message).toMatch(/default gateways of sr0 could not be read .*refused by the test/);
    } finally {
      process.env.PATH = path;
      await rm(bin, { recursive: true, force: true });
    }
    expect((await routes()).sort()).toEqual([...STALE, ...KEPT].sort());
  });
});
