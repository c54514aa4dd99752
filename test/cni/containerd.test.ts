// One real container through Debian's containerd and runc, its network from weft's CNI config:
// an OCI image built here from Debian's static busybox (no registry), containerd running in a lab
// host's network namespace with state of its own, the pod's namespace made and CNI ADD run as
// the CRI plugin does (the host's conflist: weft cni → bridge + host-local, portmap), then the
// container started in that namespace; it pings a pod on the other host across the vxlan overlay.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  readFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LabAgents } from "../../src/lab/agents.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { Netns } from "../../src/lab/netns.js";
import { formatIpv4 } from "../../src/net/ipv4.js";
import { netConf } from "../agent/support.js";
import { canUseNetns } from "../support/netns.js";

const run = promisify(execFile);
const TOOLS = ["/usr/bin/containerd", "/usr/bin/ctr", "/usr/sbin/runc", "/usr/bin/busybox"];

function haveTools(): boolean {
  const missing = TOOLS.filter((t) => !existsSync(t));
  if (missing.length && process.env.CI === "true")
    throw new Error(
      `${missing.join(", ")} missing (apt-get install containerd runc busybox-static), and CI=true forbids skipping`,
    );
  return missing.length === 0;
}

/** An OCI image layout tar: one layer holding static busybox and a few applet links. */
async function buildImage(dir: string): Promise<string> {
  const rootfs = join(dir, "rootfs");
  for (const d of ["bin", "etc", "proc", "sys", "dev", "tmp"]) mkdirSync(join(rootfs, d), { recursive: true });
  copyFileSync("/usr/bin/busybox", join(rootfs, "bin", "busybox"));
  chmodSync(join(rootfs, "bin", "busybox"), 0o755);
  for (const app of ["sh", "ip", "ping"]) symlinkSync("busybox", join(rootfs, "bin", app));
  await run("tar", ["-C", rootfs, "--owner=0", "--group=0", "-cf", join(dir, "layer.tar"), "."]);
  const layout = join(dir, "oci");
  mkdirSync(join(layout, "blobs", "sha256"), { recursive: true });
  const blob = (b: Buffer) => {
    const h = createHash("sha256").update(b).digest("hex");
    writeFileSync(join(layout, "blobs", "sha256", h), b);
    return { digest: `sha256:${h}`, size: b.length };
  };
  const tar = readFileSync(join(dir, "layer.tar"));
  const layer = blob(gzipSync(tar));
  const config = blob(
    Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        config: { Cmd: ["/bin/sh"], Env: ["PATH=/bin"] },
        rootfs: { type: "layers", diff_ids: [`sha256:${createHash("sha256").update(tar).digest("hex")}`] },
      }),
    ),
  );
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer }],
      }),
    ),
  );
  writeFileSync(
    join(layout, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          ...manifest,
          annotations: { "org.opencontainers.image.ref.name": "weft.local/busybox:1" },
        },
      ],
    }),
  );
  writeFileSync(join(layout, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await run("tar", ["-C", layout, "-cf", join(dir, "image.tar"), "."]);
  return join(dir, "image.tar");
}

describe.skipIf(!canUseNetns() || !haveTools())(
  "a real container through containerd and runc, networked by weft's CNI config",
  () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-containerd-"));
    let lab: LabCluster;
    let agents: LabAgents;
    let containerd: ChildProcess | undefined;
    const sock = join(dir, "containerd.sock");
    const ctr = (...a: string[]) => run("ctr", ["-a", sock, "-n", "weft", ...a], { timeout: 60_000 });

    beforeAll(async () => {
      lab = await LabCluster.create({ tag: "ctrd", hosts: 2 });
      agents = await LabAgents.prepare(lab, () => netConf("vxlan"));
      agents.startAll();
      await agents.waitAllReady();
      await lab.addPodsFromSubnetFile(lab.hosts[1], agents.subnetFile(agents.agents[1]), 1);
      writeFileSync(
        join(dir, "config.toml"),
        `version = 2\nroot = "${dir}/root"\nstate = "${dir}/state"\n[grpc]\n  address = "${sock}"\n`,
      );
      // nsenter, not `ip netns exec`: that one remounts /sys, hiding the cgroup mounts runc needs.
      const log = openSync(join(dir, "containerd.log"), "w");
      containerd = spawn(
        "nsenter",
        [`--net=${lab.hosts[0].ns.path}`, "containerd", "--config", join(dir, "config.toml")],
        { stdio: ["ignore", log, log] },
      );
      for (let i = 0; i < 150 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 200));
      await ctr("image", "import", await buildImage(dir));
    }, 180_000);

    afterAll(async () => {
      if (containerd && containerd.exitCode === null) {
        const gone = new Promise((r) => containerd!.once("exit", r));
        containerd.kill("SIGTERM");
        await gone;
      }
      await agents?.stopAll();
      await lab?.destroy();
      rmSync(dir, { recursive: true, force: true });
    });

    it("gets an address of its host's subnet, the MTU, and pings a pod on the other host", async () => {
      const [h1, h2] = lab.hosts;
      const ns = await Netns.create("ctrd-c1");
      const rt = lab.cni(h1, agents.subnetFile(agents.agents[0]));
      const att = { containerId: ns.name, netns: ns.path, ifName: "eth0" };
      try {
        const result = await rt.add(att);
        const addr = result.ips![0].address;
        const target = formatIpv4(h2.pods[0].addr);
        // The peer's route follows its lease by up to one programming round: wait for it from the
        // pod's namespace before the container starts in it.
        for (
          let t = 0;
          t < 30 &&
          !(await ns.exec(["ping", "-c", "1", "-W", "1", target]).then(
            () => true,
            () => false,
          ));
          t++
        );
        const { stdout } = await ctr(
          "run",
          "--rm",
          "--with-ns",
          `network:${ns.path}`,
          "weft.local/busybox:1",
          "c1",
          "sh",
          "-c",
          `ip -4 addr show eth0; ping -c 3 -W 2 ${target}`,
        ).catch((e: { stdout?: string; stderr?: string }) => {
          throw new Error(`ctr run failed:\n${e.stdout ?? ""}${e.stderr ?? ""}`);
        });
        expect(stdout).toContain(`inet ${addr}`);
        expect(stdout).toMatch(/mtu 1450/);
        expect(stdout).toContain("3 packets transmitted, 3 packets received");
        await rt.del(att, result);
      } finally {
        await ns.destroy();
      }
    }, 120_000);
  },
);
