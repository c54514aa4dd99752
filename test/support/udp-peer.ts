// Drives test/kernel/fixtures/udp-peer.mjs inside a namespace: a real UDP socket there that sends
// datagrams and captures what arrives.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { Netns } from "./netns.js";

const script = fileURLToPath(new URL("../kernel/fixtures/udp-peer.mjs", import.meta.url));

export interface UdpPeerOptions {
  /** "address:port" to bind. */
  bind?: string;
  /** "address:port" to send the datagrams to. */
  sendTo?: string;
  /** Datagrams to send, in order. */
  send?: Uint8Array[];
  /** Stop after this many datagrams arrived (0: send and exit). */
  expect?: number;
  timeoutMs?: number;
}

export interface Captured {
  bytes: Uint8Array;
  from: string;
}

/** Starts the peer; resolves `ready` once it is bound, `done` with what it captured. */
export function udpPeer(ns: Netns, opts: UdpPeerOptions): { ready: Promise<void>; done: Promise<Captured[]> } {
  const arg = JSON.stringify({ ...opts, send: opts.send?.map((b) => Buffer.from(b).toString("hex")) });
  const [cmd, ...argv] = ns.wrap([process.execPath, script, arg]);
  const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout });
  let onReady!: () => void;
  const ready = new Promise<void>((res) => (onReady = res));
  const done = new Promise<Captured[]>((resolve, reject) => {
    lines.on("line", (line) => {
      if (line === "ready") return onReady();
      const got = JSON.parse(line) as Array<{ hex: string; from: string }>;
      resolve(got.map((g) => ({ bytes: Uint8Array.from(Buffer.from(g.hex, "hex")), from: g.from })));
    });
    child.on("exit", (code) => reject(new Error(`udp peer in ${ns.name} exited with ${code} before reporting`)));
    child.on("error", reject);
  });
  return { ready, done };
}
