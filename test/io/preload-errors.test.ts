// Errors this kernel cannot be made to give, from LD_PRELOAD shims, in a process of its own
// (test/kernel/fixtures/preload-io.mjs) inside a namespace the test creates.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canUseNetns, Netns } from "../support/netns.js";
import { buildPreload, FIXTURES } from "../support/preload.js";

const { errno } = constants;
const PORT = 7999;

describe.skipIf(!canUseNetns())("native I/O errors from preload shims", () => {
  let dir: string;
  let ns: Netns;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "weft-preload-"));
    ns = await Netns.create("preload");
    await ns.ip("link set lo up");
    await ns.ip("addr add 198.18.0.1/32 dev lo");
  });
  afterAll(async () => {
    await ns?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function run(shim: string, env: Record<string, string>, scenario: object) {
    const [cmd, ...argv] = ns.wrap([process.execPath, join(FIXTURES, "preload-io.mjs"), JSON.stringify(scenario)]);
    const out = execFileSync(cmd, argv, { env: { ...process.env, ...env, LD_PRELOAD: buildPreload(shim, dir) } });
    return JSON.parse(out.toString());
  }

  it("keeps GSO refused when the train's datagrams, sent one by one, fail too", () => {
    // The shim refuses the train (EIO), then fails its first single datagram with EPERM, as a
    // netfilter drop would: the train is lost and counted, and GSO stays off.
    const log = join(dir, "refusals");
    const r = run(
      "refuse-gso",
      { WEFT_REFUSE_GSO_PORT: String(PORT), WEFT_REFUSE_GSO_LOG: log, WEFT_REFUSE_GSO_THEN_FAIL: String(errno.EPERM) },
      { case: "gso-fallback", port: PORT, n: 8 },
    );
    expect(r).toEqual({ first: [8, 8, errno.EPERM], gsoRefused: true, second: [8, 0, 0] });
    // The second send went without GSO: one refusal in all.
    expect(readFileSync(log, "utf8")).toBe("EIO\n");
  });

  it.each(["EBADF", "ENOTSOCK"] as const)(
    "reports the messages a send moved before its fd went (%s), and throws on the next call",
    (code) => {
      // The shim fails every sendmmsg from the third on, as a socket closed (or its fd reused)
      // between two of one send's calls: the first went up to the unroutable datagram 2, the
      // second was refused for it. The send threw, and the datagrams sent counted as not sent.
      const r = run(
        "fail-sendmmsg",
        { WEFT_FAIL_SENDMMSG_NTH: "3", WEFT_FAIL_SENDMMSG_ERRNO: String(errno[code]) },
        { case: "send-gone", n: 6, unroutable: 2 },
      );
      expect(r).toEqual({ first: [3, 1, errno.ENETUNREACH], second: code, received: [0, 1] });
    },
  );

  it("throws, counting nothing as refused, when a refused GSO send's datagrams meet a closed fd", () => {
    // They were counted as lost to the kernel (done and failed, with EBADF), though none went.
    const r = run(
      "refuse-gso",
      { WEFT_REFUSE_GSO_PORT: String(PORT), WEFT_REFUSE_GSO_THEN_FAIL: String(errno.EBADF) },
      { case: "gso-fallback", port: PORT, n: 8 },
    );
    expect(r).toEqual({ first: "EBADF", gsoRefused: false, second: "EBADF" });
  });

  it("counts a TUN read that fails after the batch's first packet, whose packet the kernel dropped", () => {
    const r = run("fail-readv", { WEFT_FAIL_READV_NTH: "3" }, { case: "tun-read", n: 8 });
    expect(r).toEqual({ reads: [2, 5], tunReadErrors: 1 });
  });
});
