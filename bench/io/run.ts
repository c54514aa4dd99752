// The I/O benchmark (npm run bench:io): packets per second through a TUN device and between UDP
// sockets, batched against one packet per call, and against node:dgram. Needs root: everything
// happens in a network namespace made here and removed afterwards, also on failure.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Command } from "commander";
import { canUseNetns, Netns } from "../../test/support/netns.js";
import { BATCH_SIZES, PAYLOAD_BYTES, REPEATS, SETUP, SLICE_MS, type CaseResult, type Mode } from "./setup.js";

// No options; parsed all the same, so that --help says what this measures and a stray argument is
// refused rather than ignored.
new Command("bench:io")
  .description("TUN and UDP packets per second, batched against one packet per call and against node:dgram (root)")
  .parse();

const run = promisify(execFile);

async function prepare(ns: Netns): Promise<void> {
  await ns.ip(`tuntap add dev ${SETUP.tun} mode tun`);
  await ns.ip(`addr add ${SETUP.tunLocal}/24 dev ${SETUP.tun}`);
  await ns.ip(`link set ${SETUP.tun} up`);
  await ns.ip(`addr add ${SETUP.udpA}/32 dev lo`);
  await ns.ip(`addr add ${SETUP.udpB}/32 dev lo`);
}

const fmt = (r: CaseResult | undefined) => (r ? `${r.pps.toLocaleString("en")} (${r.cpuNsPerPacket} ns)` : "-");

function table(results: CaseResult[]): string {
  const rows = [
    "| case | batch | batched calls | one packet per call | CPU per packet, one per call / batched | node:dgram | late or lost |",
    "|---|---:|---:|---:|---:|---:|---:|",
  ];
  const find = (name: string, mode: Mode, batch: number) =>
    results.find((r) => r.name === name && r.mode === mode && r.batch === batch);
  for (const name of ["tun write+read", "udp send+recv"]) {
    for (const batch of BATCH_SIZES) {
      const batched = find(name, "batch", batch);
      const single = find(name, "single", batch);
      const node = find(name, "dgram", batch);
      if (!batched || !single) continue;
      const lost = batched.lost + single.lost + (node?.lost ?? 0);
      rows.push(
        `| ${name} | ${batch} | ${fmt(batched)} | ${fmt(single)} | ${(single.cpuNsPerPacket / batched.cpuNsPerPacket).toFixed(2)}x | ${fmt(node)} | ${lost} |`,
      );
    }
  }
  return rows.join("\n");
}

if (!canUseNetns()) {
  console.error("bench:io needs root and iproute2: it measures inside a network namespace it creates");
  process.exit(1);
}
const ns = await Netns.create("bench");
try {
  await prepare(ns);
  const cases = fileURLToPath(new URL("./cases.js", import.meta.url));
  const { stdout } = await run("ip", ["netns", "exec", ns.name, process.execPath, cases], { timeout: 120_000 });
  const results = stdout
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as CaseResult);
  console.log(
    `weft I/O benchmark: ${PAYLOAD_BYTES}-byte payloads; packets per second (each written and read once), ` +
      `median of ${REPEATS} interleaved ${SLICE_MS}-ms slices (CPU ns per packet, which other load on the machine skews less)\n`,
  );
  console.log(table(results));
} finally {
  await ns.destroy();
}
