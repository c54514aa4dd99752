// A state dir that defends itself and surfaces that leak nothing, with real agents in namespaces:
// the state dir and the subnet file's dir are created (0700), weft.sock is 0600, a second agent on
// the same state dir is refused and leaves the first alone, SIGTERM while waiting for a lease exits
// 0 and removes what it made, a full disk at start is retried and explained, the TCP ports serve only what they are for (/status and /metrics
// stay off 0.0.0.0), a 9000-byte underlay works with wasm-vxlan, and datagrams the kernel drops
// on the dataplane's sockets and at its TUN ring show up in /metrics and `weft status`.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import { LabAgents, type LabAgent, running } from "../../src/lab/agents.js";
import { atomicTempPath } from "../../src/fs/atomic-write.js";
import { LabCluster, type LabHost } from "../../src/lab/cluster.js";
import { formatIpv4 } from "../../src/net/ipv4.js";
import { projectFile } from "../../src/paths.js";
import { canUseNetns } from "../support/netns.js";
import { eventually, FLOOD, kernelState, NETWORK, netConf } from "./support.js";

const run = promisify(execFile);

/** Takes the state dir lock of argv[2] with the built module argv[1]; "hold" keeps it until killed, "try" exits. */
const LOCK_SCRIPT = `import(process.argv[1]).then((m) => m.StateDirLock.acquire(process.argv[2])).then(
  () => { console.log("held"); if (process.argv[3] === "hold") setInterval(() => {}, 1000); else process.exit(0); },
  (e) => { console.log(e.code + " " + e.message); process.exit(0); });`;

/** An HTTP GET from inside the host's namespace: "status body", or "refused". */
const GET = `require("node:http").get(process.argv[1], (r) => { let b = ""; r.on("data", (d) => (b += d)); r.on("end", () => console.log(r.statusCode + " " + b)); }).on("error", (e) => console.log(e.code === "ECONNREFUSED" ? "refused" : e.message));`;

describe.skipIf(!canUseNetns())("agent: state dir and surfaces", () => {
  let lab: LabCluster;
  let agents: LabAgents;
  let a: LabAgent;
  let sender: LabHost;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "ahs", hosts: 2 });
    agents = await LabAgents.prepare(lab, () => netConf("vxlan"));
    a = agents.agents[0];
    sender = lab.hosts[1];
  });

  afterAll(async () => {
    for (const c of children) if (running(c)) c.kill("SIGKILL");
    await agents?.stopAll();
    await lab?.destroy();
  });

  /** `weft agent` in the first host alone (seeds itself) with a state dir and subnet file of our choosing, then `args`. */
  function argv(stateDir: string, args: string[], subnetFile = join(stateDir, "subnet.env")): string[] {
    return a.host.ns.wrap([
      process.execPath,
      projectFile("dist", "src", "cli", "main.js"),
      "agent",
      "--net-config",
      agents.netConfPath(a),
      "--iface",
      "eth0",
      "--key-file",
      join(agents.dir, "cluster.key"),
      "--state-dir",
      stateDir,
      "--subnet-file",
      subnetFile,
      "--node-name",
      a.host.name,
      ...args,
    ]);
  }

  function startAgent(
    stateDir: string,
    args: string[],
    subnetFile?: string,
  ): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
    const [cmd, ...rest] = argv(stateDir, args, subnetFile);
    const child = spawn(cmd, rest, { stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let out = "";
    child.stdout!.on("data", (d) => (out += d));
    child.stderr!.on("data", (d) => (out += d));
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    return { child, output: () => out, exited };
  }

  /** Polls `f` until it gives a value (errors count as not yet). */
  const until = <T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> =>
    eventually(
      what,
      () => f().catch(() => undefined),
      (v) => v !== undefined,
      timeoutMs,
    ) as Promise<T>;

  const ready = (stateDir: string) =>
    until("ready", async () => ((await agentRequest(stateDir, "GET", "/readyz")) ? true : undefined));
  const httpGet = async (url: string) => (await a.host.ns.exec([process.execPath, "-e", GET, url])).trim();

  it("creates the state dir 0700 and the subnet file's dir, makes weft.sock 0600, and refuses a second agent on the same state dir", async () => {
    const stateDir = join(a.dir, "fresh", "state");
    const subnetFile = join(a.dir, "run", "flannel", "subnet.env");
    const first = startAgent(stateDir, [], subnetFile);
    await ready(stateDir);
    expect(statSync(stateDir).mode & 0o777).toBe(0o700);
    expect(statSync(join(stateDir, "weft.sock")).mode & 0o777).toBe(0o600);
    expect(existsSync(subnetFile)).toBe(true);
    expect(existsSync(atomicTempPath(subnetFile, first.child.pid))).toBe(false);

    // Same dir and name, another gossip port: refused before it touches weft.sock or the kernel.
    const second = await run(
      argv(stateDir, ["--gossip-port", "7950"], subnetFile)[0],
      argv(stateDir, ["--gossip-port", "7950"], subnetFile).slice(1),
      { timeout: 30_000 },
    ).then(
      () => ({ code: 0, stderr: "" }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(second.code).toBe(1);
    expect(second.stderr.trim()).toMatch(
      new RegExp(
        `^weft: \\[AGENT_STATE_DIR_LOCKED\\] --state-dir ${stateDir} is in use by another weft agent \\(pid ${first.child.pid} `,
      ),
    );
    expect(await agentRequest(stateDir, "GET", "/readyz")).toBe("ready\n"); // the first still serves its socket
    expect((await a.host.ns.kernel.ipJson<Array<{ ifname: string }>>(["link", "show"])).map((l) => l.ifname)).toContain(
      "flannel.1",
    );

    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);
    for (const f of ["weft.sock", "weft.lock"])
      expect(lstatSync(join(stateDir, f), { throwIfNoEntry: false }), f).toBeUndefined();
  });

  it("holds the state dir across PID namespaces (containers sharing it), where pids mean nothing", async () => {
    const dir = join(a.dir, "shared-by-containers");
    const lockIn = (mode: "hold" | "try") =>
      a.host.ns.wrap([
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        process.execPath,
        "-e",
        LOCK_SCRIPT,
        projectFile("dist", "src", "agent", "state-dir.js"),
        dir,
        mode,
      ]);
    const [cmd, ...rest] = lockIn("hold");
    const holder = spawn(cmd, rest, { stdio: ["ignore", "pipe", "inherit"] });
    children.push(holder);
    await new Promise<void>((resolve) => holder.stdout!.once("data", () => resolve()));
    const [cmd2, ...rest2] = lockIn("try");
    const other = (await run(cmd2, rest2, { timeout: 20_000 })).stdout.trim();
    // Both are pid 1 in their own namespace: the pid file alone would call the lock stale.
    expect(other).toMatch(
      new RegExp(
        `^AGENT_STATE_DIR_LOCKED --state-dir ${dir} is in use by another weft agent \\(pid 1 in its PID namespace`,
      ),
    );
    holder.kill("SIGKILL");
    await new Promise((r) => holder.once("exit", r));
    expect((await run(cmd2, rest2, { timeout: 20_000 })).stdout.trim()).toBe("held"); // freed by the kernel when the holder died
  });

  it("exits 0 on SIGTERM while waiting for a lease, says why it is not ready, and leaves nothing behind", async () => {
    const stateDir = join(a.dir, "waiting");
    const before = await kernelState(a.host);
    // The only seed is a node that never comes, so no subnet can be leased.
    const agent = startAgent(stateDir, ["--subnet-seeds", "ghost", "--healthz-port", "9104"]);
    const why = await until("a 503 from weft.sock's /readyz that says why", () =>
      agentRequest(stateDir, "GET", "/readyz").then(
        () => undefined,
        (err: Error) => (err.message.includes(": no subnet yet") ? err.message : undefined),
      ),
    );
    // No join list: nothing to reach first, so it waits in the lease phase and says why.
    expect(why).toMatch(
      /^agent answered 503: not ready: waiting for a subnet lease: no subnet yet: this node knows the owners of only 0 of \d+ subnets/,
    );
    // On the public port, not why: the reason can name nodes and errors.
    expect(await httpGet(`http://${formatIpv4(a.host.underlayAddr)}:9104/readyz`)).toBe(
      "503 not ready (weft status on this node says why)",
    );
    expect(await agentRequest(stateDir, "GET", "/status")).toMatchObject({
      ready: false,
      waitingFor: expect.stringMatching(/^waiting for a subnet lease: no subnet yet/),
      join: { state: "standalone" },
    });
    agent.child.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    expect(agent.output()).toMatch(/"msg":"stopped while starting; nothing left behind"/);
    for (const f of ["weft.sock", "weft.lock", "vtep-mac", "subnet.env"])
      expect(lstatSync(join(stateDir, f), { throwIfNoEntry: false }), f).toBeUndefined();
    expect(await kernelState(a.host)).toEqual(before);
  });

  it("stops cleanly on SIGTERM in every phase of the start: nothing left in the state dir or the kernel", async () => {
    const before = await kernelState(a.host);
    // From Node's own start-up (no handler yet: the default action ends it, before anything exists)
    // through flag and config checks, the lock, gossip, to the wait for the seed division (10 s).
    for (const delayMs of [0, 150, 400, 800, 1500, 3000, 6000]) {
      const stateDir = join(a.dir, `phase-${delayMs}`);
      const agent = startAgent(stateDir, []);
      await new Promise((r) => setTimeout(r, delayMs));
      agent.child.kill("SIGTERM");
      const code = await agent.exited;
      expect(
        code === 0 || agent.child.signalCode === "SIGTERM",
        `after ${delayMs} ms: exit ${code}\n${agent.output()}`,
      ).toBe(true);
      expect(agent.output()).not.toMatch(/^weft: /m);
      for (const f of ["weft.sock", "weft.lock", "subnet.env", "vtep-mac"])
        expect(lstatSync(join(stateDir, f), { throwIfNoEntry: false }), `${f} after ${delayMs} ms`).toBeUndefined();
      expect(await kernelState(a.host)).toEqual(before);
    }
  });

  it("retries a full disk at start with backoff, says why in /readyz and status, leaves no temp file, and gets ready once there is room", async () => {
    // A 256 KiB tmpfs as the state dir, in a mount namespace of the agent's own (gone with it).
    const mountpoint = join(a.dir, "small-disk");
    mkdirSync(mountpoint);
    const [cmd, ...rest] = argv(join(mountpoint, "state"), []);
    const child = spawn(
      "unshare",
      [
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t tmpfs -o size=256k weft-test "$0" && exec "$@"',
        mountpoint,
        cmd,
        ...rest,
      ],
      { stdio: "ignore" },
    );
    children.push(child);
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    const stateDir = `/proc/${child.pid}/root${mountpoint}/state`; // the agent's view of its mounts
    await until("weft.sock", async () => (existsSync(join(stateDir, "weft.sock")) ? true : undefined));
    // Fill the disk before the first save (the seed division is saved after 10 s of listening).
    expect(() => writeFileSync(`/proc/${child.pid}/root${mountpoint}/fill`, Buffer.alloc(512 * 1024))).toThrow(
      /ENOSPC/,
    );
    const status = await until("a full disk in weft status", async () => {
      const s = (await agentRequest(stateDir, "GET", "/status")) as { ready: boolean; waitingFor?: string };
      return s.waitingFor?.includes("no space left on device") ? s : undefined;
    });
    expect(status.waitingFor).toMatch(
      /^waiting for a subnet lease: cannot save lease state to \S+lease-state\.json: ENOSPC: no space left on device.*\(retrying in \d+ s\)$/,
    );
    await expect(agentRequest(stateDir, "GET", "/readyz")).rejects.toThrow(
      /503: not ready: waiting for a subnet lease: cannot save lease state/,
    );
    expect(readdirSync(stateDir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    rmSync(`/proc/${child.pid}/root${mountpoint}/fill`);
    await until("ready once there is room", async () =>
      (await agentRequest(stateDir, "GET", "/readyz")) ? true : undefined,
    );
    expect(readdirSync(stateDir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });

  it("serves only health on --healthz-port and /metrics on loopback; runs wasm-vxlan on a 9000-byte underlay; counts kernel drops on its sockets and at its TUN ring", async () => {
    await writeFile(
      agents.netConfPath(a),
      // Two queue pairs on the one worker: net-conf.json's key reaches the dataplane (two sockets).
      JSON.stringify({ Network: NETWORK, Backend: { Type: "wasm-vxlan", Workers: 1, QueuesPerWorker: 2 } }),
    );
    await a.host.ns.exec(["ip", "link", "set", "dev", "eth0", "mtu", "9000"]);
    const stateDir = join(a.dir, "surfaces");
    const agent = startAgent(stateDir, ["--healthz-port", "9102", "--metrics-port", "9103"]);
    await ready(stateDir);
    const underlay = formatIpv4(a.host.underlayAddr);
    expect(await httpGet(`http://${underlay}:9102/healthz`)).toBe("200 weft is running");
    expect(await httpGet(`http://${underlay}:9102/readyz`)).toBe("200 ready");
    expect(await httpGet(`http://${underlay}:9102/status`)).toMatch(/^404 /);
    expect(await httpGet(`http://${underlay}:9102/metrics`)).toMatch(/^404 /);
    expect(await httpGet(`http://${underlay}:9103/metrics`)).toBe("refused");
    expect(await httpGet("http://127.0.0.1:9103/status")).toMatch(/^404 /);
    expect(await httpGet("http://127.0.0.1:9103/metrics")).toMatch(
      /^200 [\s\S]*weft_dataplane_socket_drops_total\{family="4"\} 0$/m,
    );

    // The dataplane's slots hold MTU 1962: a jumbo underlay gives pods that, not a failed start.
    expect(await readFile(join(stateDir, "subnet.env"), "utf8")).toMatch(/^FLANNEL_MTU=1962$/m);

    // Stop the agent, flood its socket from the other host, resume: the kernel drops what does not fit.
    process.kill(agent.child.pid!, "SIGSTOP");
    try {
      await sender.ns.exec([process.execPath, "-e", FLOOD, underlay, "20000"], { timeoutMs: 30_000 });
    } finally {
      process.kill(agent.child.pid!, "SIGCONT");
    }
    const status = await until("socket drops in weft status", async () => {
      const s = (await agentRequest(stateDir, "GET", "/status")) as {
        socketDrops?: { sockets: number; drops: number };
      };
      return s.socketDrops && s.socketDrops.drops > 0 ? s.socketDrops : undefined;
    });
    expect(status.sockets).toBe(2);
    const metrics = await httpGet("http://127.0.0.1:9103/metrics");
    const drops = Number(/^weft_dataplane_socket_drops_total\{family="4"\} (\d+)$/m.exec(metrics)?.[1]);
    expect(drops).toBeGreaterThanOrEqual(status.drops);

    // Stopped again, its TUN ring fills with datagrams this host routes into the pod network (to a
    // subnet not its own); the kernel drops the rest at the ring, and /metrics and /status say so.
    const own = /^FLANNEL_SUBNET=198\.19\.(\d+)\./m.exec(await readFile(join(stateDir, "subnet.env"), "utf8"));
    const elsewhere = `198.19.${(Number(own![1]) + 128) % 256}.5`;
    const tunDrops = async () => {
      const [link] = JSON.parse(await a.host.ns.exec(["ip", "-j", "-s", "link", "show", "dev", "weft.1"]));
      return { ring: link.txqlen as number, dropped: link.stats64.tx.dropped as number };
    };
    const before = await tunDrops();
    const ringDrops = (text: string) =>
      Number(/^weft_dataplane_queue_drops_total\{family="4",reason="tun-ring"\} (\d+)$/m.exec(text)?.[1]);
    expect(ringDrops(await httpGet("http://127.0.0.1:9103/metrics"))).toBe(before.dropped);
    process.kill(agent.child.pid!, "SIGSTOP");
    try {
      await a.host.ns.exec([process.execPath, "-e", FLOOD, elsewhere, "5000"], { timeoutMs: 30_000 });
    } finally {
      process.kill(agent.child.pid!, "SIGCONT");
    }
    const after = await tunDrops();
    // One flow, one ring: all but what it holds are dropped.
    expect(after.dropped - before.dropped).toBeGreaterThanOrEqual(5000 - before.ring);
    expect(ringDrops(await httpGet("http://127.0.0.1:9103/metrics"))).toBe(after.dropped);
    const seen = (await agentRequest(stateDir, "GET", "/status")) as { dataplane: { tunRingDrops: number } };
    expect(seen.dataplane.tunRingDrops).toBe(after.dropped);
    agent.child.kill("SIGTERM");
    expect(await agent.exited).toBe(0);

    // /status on TCP only when asked for.
    const asked = startAgent(stateDir, ["--healthz-port", "9102", "--healthz-status"]);
    await ready(stateDir);
    expect(await httpGet(`http://${underlay}:9102/status`)).toMatch(new RegExp(`^200 \\{"node":"${a.host.name}"`));
    asked.child.kill("SIGTERM");
    expect(await asked.exited).toBe(0);
    await a.host.ns.exec(["ip", "link", "set", "dev", "eth0", "mtu", "1500"]);
  });
});
