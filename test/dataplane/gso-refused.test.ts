// UDP GSO sends that the kernel refuses with EIO, as udp_send_skb does where the underlay route
// goes through xfrm (IPsec) and, before Linux 6.11, where the device has no TX checksum offload.
// This kernel may have neither ESP nor an old checksum rule, so host 1's dataplane runs in a
// process of its own (test/kernel/fixtures/dataplane-host.mjs) under an LD_PRELOAD shim
// (refuse-gso.c) that refuses exactly those sends the way the kernel would; host 2's dataplane
// is an ordinary one. TCP must still arrive exactly, and each socket must fall back once.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface, type Interface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UserspaceDataplane } from "../../src/dataplane/dataplane.js";
import { LabCluster } from "../../src/lab/cluster.js";
import {
  dataplaneHostOptions,
  macOf,
  mtuOf,
  peerOf,
  portOf,
  startDataplane,
  subnetOf,
} from "../support/dataplane-lab.js";
import { canUseNetns } from "../support/netns.js";
import { buildPreload, FIXTURES } from "../support/preload.js";
import { tcpTransfer } from "../support/tcp-transfer.js";

const MB = 1_000_000;
const REFUSED_LOG = "the kernel refused a UDP GSO send";

describe.skipIf(!canUseNetns())("UDP GSO sends refused by the kernel (EIO)", () => {
  let dir: string;
  let lab: LabCluster;
  let dp2: UserspaceDataplane | undefined;
  let child: ChildProcess | undefined;
  let lines: Interface;
  let stderr = "";
  const next = () => new Promise<string>((resolve) => lines.once("line", resolve));

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "weft-gso-eio-"));
    const shim = buildPreload("refuse-gso", dir);
    lab = await LabCluster.create({ tag: "gsoeio", hosts: 2 });
    const [h1, h2] = lab.hosts;
    await lab.addPods(h1, subnetOf(1), 1, mtuOf("vxlan"));
    await lab.addPods(h2, subnetOf(2), 1, mtuOf("vxlan"));
    dp2 = await startDataplane(h2, 2);
    dp2.setPeer(peerOf(h1, 1));
    const options = dataplaneHostOptions(h1, 1);
    const peer = { ...peerOf(h2, 2), vtepMac: [...macOf(2)] };
    const [cmd, ...argv] = h1.ns.wrap([
      process.execPath,
      join(FIXTURES, "dataplane-host.mjs"),
      JSON.stringify({ options, peer }),
    ]);
    child = spawn(cmd, argv, {
      stdio: ["pipe", "pipe", "pipe"],
      env: {
        ...process.env,
        LD_PRELOAD: shim,
        WEFT_REFUSE_GSO_PORT: String(portOf("vxlan")),
        WEFT_REFUSE_GSO_LOG: join(dir, "refusals"),
      },
    });
    child.stderr!.on("data", (d) => (stderr += d));
    lines = createInterface({ input: child.stdout! });
    expect(await next()).toBe("ready");
  });

  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child!.once("exit", r));
      child.stdin!.write("stop\n");
      const kill = setTimeout(() => child!.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(kill);
    }
    await dp2?.stop();
    await lab?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("sends each refused train again as single datagrams, and every later send of that socket without GSO", async () => {
    const [h1, h2] = lab.hosts;
    const { sent, received } = await tcpTransfer(h1.pods[0], h2.pods[0], 20 * MB);
    expect(sent.bytes).toBe(20 * MB);
    expect(received).toEqual(sent);
    child!.stdin!.write("counters\n");
    const c = JSON.parse(await next());
    // The offload path ran: super-packets were cut into GSO sends, which the shim refused.
    expect(c.offload.enabled).toBe(true);
    expect(BigInt(c.tx.offloadSegments)).toBeGreaterThan(0n);
    const refusals = readFileSync(join(dir, "refusals"), "utf8").trim().split("\n").length;
    expect(refusals).toBeGreaterThan(0);
    // Sticky: one refusal per socket that fell back, never another, and one log line each.
    expect(c.offload.udpGsoRefused).toBe(refusals);
    expect(stderr.split("\n").filter((l) => l.includes(REFUSED_LOG))).toHaveLength(refusals);
    expect(BigInt(c.io.sendErrors)).toBe(0n);
  });
});
