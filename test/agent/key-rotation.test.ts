// Two real agents, each with its own key file, rotate the cluster key while running: the three
// steps README gives (add the new key second; make it first; remove the old one), each an edit
// of every node's file and a SIGHUP, node after node. Both stay alive members of each other all
// along and no frame is refused; `weft status` shows the key ids in force. A file refused on
// SIGHUP (two keys on one line) leaves the keys in force, and a node left on a removed key is
// named in its peer's log with the key id. Before, SIGHUP read net-conf.json only: the key file
// was read at start, so rotating needed a restart of every node at every step.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { agentRequest } from "../../src/cli/agent-client.js";
import { generateKey, Keyring } from "../../src/control/gossip/keyring.js";
import type { LabAgent } from "../../src/lab/agents.js";
import { canUseNetns } from "../support/netns.js";
import { agentLab, coded, counterSamples, eventually, netConf } from "./support.js";

describe.skipIf(!canUseNetns())("gossip key rotation on SIGHUP", () => {
  const keys = mkdtempSync(join(tmpdir(), "weft-keyrot-"));
  afterAll(() => rmSync(keys, { recursive: true, force: true }));
  const keyFile = (a: LabAgent) => join(keys, `${a.host.name}.key`);
  const b64 = (k: Uint8Array) => Buffer.from(k).toString("base64");
  const [OLD, NEW] = [generateKey(), generateKey()];
  const id = (k: Uint8Array) => new Keyring(k).ids().primary;
  const write = (a: LabAgent, lines: string[]) => writeFileSync(keyFile(a), `${lines.join("\n")}\n`, { mode: 0o600 });
  const env = agentLab({
    tag: "akey",
    hosts: 2,
    conf: () => netConf("host-gw"),
    settled: { what: "its peer", check: (s) => s.ready && s.peers.length === 1 },
    setup: (a) => write(a, [b64(OLD)]),
    // After the lab's own --key-file: the last one given stands.
    flags: (a) => ["--key-file", keyFile(a)],
  });

  const samples = async (a: LabAgent) => counterSamples(String(await agentRequest(a.stateDir, "GET", "/metrics")));
  const acks = async (a: LabAgent) =>
    (await samples(a)).get('weft_gossip_messages_total{direction="received",kind="ack"}') ?? 0;

  it("rotates the key in three SIGHUP steps with both nodes alive members throughout; a refused file keeps the keys in force", async () => {
    // Every state each node reports of each member, sampled all along the rotation.
    const seen = new Set<string>();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        for (const a of env.all)
          for (const m of (await env.agents.status(a)).members) seen.add(`${a.host.name} sees ${m.name} ${m.state}`);
        await sleep(100);
      }
    })();
    const step = async (lines: Uint8Array[]) => {
      for (const a of env.all) {
        const since = await env.agents.logSize(a);
        write(a, lines.map(b64));
        env.agents.reload(a);
        const [reloaded] = await eventually(
          `${a.host.name} read its key file again`,
          () => coded(a.dir, since, "AGENT_KEYS_RELOADED"),
          (l) => l.length === 1,
        );
        const ids = { primary: id(lines[0]), installed: lines.map(id) };
        expect(reloaded.keyIds).toEqual(ids);
        expect((await env.agents.status(a)).gossipKeys).toEqual(ids);
        // Probe rounds with the nodes in this state, each answering the other's pings.
        const before = await Promise.all(env.all.map(acks));
        await eventually(
          "acks both ways",
          () => Promise.all(env.all.map(acks)),
          (now) => now.every((n, i) => n >= before[i] + 3),
          20_000,
        );
      }
    };
    try {
      expect((await env.agents.status(env.all[0])).gossipKeys).toEqual({ primary: id(OLD), installed: [id(OLD)] });
      await step([OLD, NEW]);
      await step([NEW, OLD]);
      await step([NEW]);
    } finally {
      sampling = false;
      await sampler;
    }
    expect([...seen].sort()).toEqual(
      ["host1 sees host1", "host1 sees host2", "host2 sees host1", "host2 sees host2"].map((s) => `${s} alive`),
    );
    for (const a of env.all) {
      expect((await samples(a)).get('weft_gossip_dropped_total{reason="badKey"}'), a.host.name).toBe(0);
      expect(await coded(a.dir, 0, "GOSSIP_FRAME_UNKNOWN_KEY"), a.host.name).toEqual([]);
    }

    // Two keys on one line: refused as a whole, the keys in force stay.
    const [a1, a2] = env.all;
    let since = await env.agents.logSize(a1);
    write(a1, [`${b64(NEW)} ${b64(OLD)}`]);
    env.agents.reload(a1);
    const [refused] = await eventually(
      "the refusal",
      () => coded(a1.dir, since, "GOSSIP_KEY_FILE_INVALID"),
      (l) => l.length === 1,
    );
    expect((refused.err as { message: string }).message).toContain("line 1 holds more than one word");
    expect(refused.keyIds).toEqual({ primary: id(NEW), installed: [id(NEW)] });
    expect((await env.agents.status(a1)).gossipKeys).toEqual({ primary: id(NEW), installed: [id(NEW)] });

    // A node put back on the removed key is named in its peer's log, with that key's id, once.
    since = await env.agents.logSize(a2);
    write(a1, [b64(OLD)]);
    env.agents.reload(a1);
    const [unknown] = await eventually(
      "host2 logs host1's unknown key",
      () => coded(a2.dir, since, "GOSSIP_FRAME_UNKNOWN_KEY"),
      (l) => l.length >= 1,
      15_000,
    );
    expect(unknown).toMatchObject({ level: 40, keyId: id(OLD), held: [id(NEW)] });
    expect(String(unknown.from)).toMatch(/^198\.18\.0\.\d+:\d+$/);
    // More refused frames, no more lines within the minute.
    const dropped = (await samples(a2)).get('weft_gossip_dropped_total{reason="badKey"}') ?? 0;
    await eventually(
      "more frames refused",
      () => samples(a2),
      (s) => (s.get('weft_gossip_dropped_total{reason="badKey"}') ?? 0) >= dropped + 3,
      15_000,
    );
    expect(await coded(a2.dir, since, "GOSSIP_FRAME_UNKNOWN_KEY")).toHaveLength(1);
  }, 180_000);

  // README's advice for a node left on a removed key (edit its key file, SIGHUP) must also work
  // for one that restarts so: it never joins, so it never finishes starting. Before, a SIGHUP
  // while starting was kept for the end of the start, which waited for the join: it did nothing.
  it("takes a fixed key file on SIGHUP while it starts and cannot join, and joins", async () => {
    const [a1, a2] = env.all;
    await env.agents.stop(a1);
    write(a1, [b64(OLD)]);
    const since = await env.agents.logSize(a1);
    env.agents.start(a1, ["--key-file", keyFile(a1)]);
    // Waiting out a backoff long enough to tell a round the SIGHUP starts from the one it waits for.
    const stuck = await env.agents.waitFor(
      a1,
      "a join round more than 5 s away after failed ones",
      (s) => s.join.nextAttemptAt !== undefined && Date.parse(s.join.nextAttemptAt) - Date.now() > 5_000,
      60_000,
    );
    expect(stuck.ready).toBe(false);
    expect(stuck.gossipKeys).toEqual({ primary: id(OLD), installed: [id(OLD)] });

    write(a1, [b64(NEW)]);
    env.agents.reload(a1);
    const [reloaded] = await eventually(
      "host1 read its key file again while starting",
      () => coded(a1.dir, since, "AGENT_KEYS_RELOADED"),
      (l) => l.length === 1,
    );
    expect(reloaded.keyIds).toEqual({ primary: id(NEW), installed: [id(NEW)] });
    await env.agents.waitReady(a1, 60_000);
    // Joined by a round the reload started, not the one the backoff had set (before, up to 30 s later).
    const { joinedAt } = (await env.agents.status(a1)).join;
    expect(Date.parse(joinedAt!)).toBeLessThan(Date.parse(stuck.join.nextAttemptAt!));
    await env.agents.waitFor(a2, "host1 back", (s) => s.ready && s.peers.some((p) => p.name === a1.host.name));
  }, 120_000);
});
