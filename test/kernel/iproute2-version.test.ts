// iproute2 before 5.0 prints `ip -json route get` as text (host-gw and vxlan's DirectRouting read
// it every round): an `ip` on PATH that answers as 4.20 does (Debian 10's) must get an error that
// says to upgrade, not JSON.parse's SyntaxError.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isWeftError } from "../../src/errors.js";
import { lookupRoutes, readEntries } from "../../src/kernel/entries.js";
import { Kernel } from "../../src/kernel/iproute.js";

describe("iproute2 older than 5.0", () => {
  let dir: string;
  const path = process.env.PATH;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "weft-ip420-"));
    // Touches nothing: `route get` as iproute2 4.20's `ip` prints it.
    writeFileSync(
      join(dir, "ip"),
      `#!/bin/sh
if [ "$1" = -V ]; then echo "ip utility, iproute2-ss190107"; exit 0; fi
while read -r cmd arg addr; do
  case "$cmd $arg" in
    "route get") printf '%s dev eth0 src 198.18.0.11 uid 0 \\n    cache \\n' "$addr" ;;
    "route show") echo '[{"dst":"198.19.2.0/24","gateway":"198.19.2.0","dev":"flannel.1","flags":["onlink"]}]' ;;
    # Neighbours as text, as an iproute2 without JSON for them prints them.
    "neigh show") printf '198.19.2.0 dev flannel.1 lladdr 0a:58:c6:13:02:00 PERMANENT\\n198.18.0.12 dev eth0 lladdr 02:00:00:00:00:12 REACHABLE\\n' ;;
  esac
done
`,
    );
    // The FDB read runs beside the ip one: an empty answer, not the host's.
    writeFileSync(join(dir, "bridge"), "#!/bin/sh\necho '[]'\n");
    for (const tool of ["ip", "bridge"]) chmodSync(join(dir, tool), 0o755);
    process.env.PATH = `${dir}:${path}`;
  });
  afterAll(() => {
    process.env.PATH = path;
    rmSync(dir, { recursive: true, force: true });
  });

  it("refuses `ip route get`'s text with KERNEL_IPROUTE2_TOO_OLD, naming the version", async () => {
    const err = await lookupRoutes(new Kernel(), [0xc612000c]).catch((e: unknown) => e);
    expect(isWeftError(err, "KERNEL_IPROUTE2_TOO_OLD")).toBe(true);
    expect((err as Error).message).toBe(
      "`ip -json route get 198.18.0.12` printed no JSON (ip utility, iproute2-ss190107); weft needs iproute2 5.0 or later: upgrade iproute2",
    );
  });

  it("refuses `ip neigh show`'s text the same way, not reading it as no neighbours", async () => {
    const err = await readEntries(new Kernel(), { addr: 0xc6130000, len: 16 }, "flannel.1").catch((e: unknown) => e);
    expect(isWeftError(err, "KERNEL_IPROUTE2_TOO_OLD")).toBe(true);
    expect((err as Error).message).toMatch(/^`ip -json neigh show` printed no JSON \(ip utility, iproute2-ss190107\)/);
  });
});
