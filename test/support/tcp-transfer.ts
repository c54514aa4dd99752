// Drives test/kernel/fixtures/tcp-transfer.mjs: an exact, hashed TCP transfer between two pods
// (tcp-transfer-opts.py, its python3 twin, where a socket option node cannot set is asked for).
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { formatIpv4 } from "../../src/net/ipv4.js";
import { formatIpv6 } from "../../src/net/ipv6.js";
import type { LabPod } from "../../src/lab/cluster.js";

const fixture = (name: string) => fileURLToPath(new URL(`../kernel/fixtures/${name}`, import.meta.url));
const script = fixture("tcp-transfer.mjs");
const scriptWithOptions = fixture("tcp-transfer-opts.py");

/**
 * Socket options of the transfer: the sink's TCP_MAXSEG, an IPV6_HOPOPTS ("hop") or IPV6_DSTOPTS
 * ("dst") header of extHeaderBytes (a multiple of 8; default 8) on the source's segments.
 */
export interface TransferOptions {
  maxSeg?: number;
  extHeader?: "hop" | "dst";
  extHeaderBytes?: number;
  timeoutMs?: number;
}

export interface TransferSide {
  bytes: number;
  sha256: string;
}

function runFixture(
  pod: LabPod,
  mode: "sink" | "source",
  opts: object,
  withOptions: boolean,
  onReady?: () => void,
): Promise<TransferSide> {
  const run = withOptions ? ["python3", scriptWithOptions] : [process.execPath, script];
  const [cmd, ...argv] = pod.ns.wrap([...run, mode, JSON.stringify(opts)]);
  const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (line === "ready") onReady?.();
      else resolve(JSON.parse(line));
    });
    child.on("exit", (code) => code !== 0 && reject(new Error(`tcp-transfer ${mode} in ${pod.name} exited ${code}`)));
  });
}

/**
 * Sends `bytes` pseudo-random bytes from `from` to `to` over TCP (to its IPv6 address with family 6); returns both sides' counts and
 * hashes once the connection is closed at both ends, so no packet of it is still in flight.
 */
export async function tcpTransfer(
  from: LabPod,
  to: LabPod,
  bytes: number,
  port = 7000,
  family: 4 | 6 = 4,
  options: TransferOptions = {},
): Promise<{ sent: TransferSide; received: TransferSide }> {
  const addr = family === 4 ? formatIpv4(to.addr) : `[${formatIpv6(to.addr6!)}]`;
  const { timeoutMs = 120_000, maxSeg, extHeader, extHeaderBytes } = options;
  const py = maxSeg !== undefined || extHeader !== undefined;
  let ready!: () => void;
  const listening = new Promise<void>((r) => (ready = r));
  const sink = runFixture(to, "sink", { bind: `${addr}:${port}`, timeoutMs, maxSeg }, py, ready);
  await listening;
  const sent = await runFixture(
    from,
    "source",
    { to: `${addr}:${port}`, bytes, timeoutMs, extHeader, extHeaderBytes },
    py,
  );
  return { sent, received: await sink };
}
