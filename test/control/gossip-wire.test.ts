// The wire format: AES-256-GCM keyring frames and the msgpack envelope codec. Anything that is not
// an authentic, well-formed frame is refused with a reason and never throws.
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { encode } from "@msgpack/msgpack";
import fc from "fast-check";
import { describe, expect, it, onTestFinished } from "vitest";
import type { WeftError } from "../../src/errors.js";
import { FRAME_OVERHEAD, generateKey, Keyring, type FrameKind } from "../../src/control/gossip/keyring.js";
import {
  buildEnvelope,
  encodeMessage,
  EnvelopeDecoder,
  envelopeHeader,
  kindOfEncoded,
  MAX_DIGEST_BYTES,
  MESSAGE_KINDS,
  type Message,
  type NodeState,
  nodeStateSize,
  protocolOf,
} from "../../src/control/gossip/messages.js";

const k1 = new Uint8Array(32).fill(1);
const k2 = new Uint8Array(32).fill(2);
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const codeOf = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    return (e as WeftError).code;
  }
  return undefined;
};

describe("Keyring", () => {
  it("opens what it sealed, for each frame kind, with a 33-byte overhead", () => {
    const ring = new Keyring(k1);
    for (const kind of ["packet", "request", "response"] as FrameKind[]) {
      const frame = ring.seal(text("hello"), kind);
      expect(frame.length).toBe(5 + FRAME_OVERHEAD);
      const r = ring.open(frame, kind);
      expect(r.ok && Buffer.from(r.plaintext).toString()).toBe("hello");
    }
  });

  it("uses a fresh nonce per frame", () => {
    const ring = new Keyring(k1);
    const a = ring.seal(text("same"), "packet");
    const b = ring.seal(text("same"), "packet");
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
  });

  it("refuses another key (badKey), tampering (badTag), another kind (badTag), short frames and unknown versions", () => {
    const ring = new Keyring(k1);
    const frame = ring.seal(text("payload"), "packet");
    expect(new Keyring(k2).open(frame, "packet")).toEqual({ ok: false, reason: "badKey" });
    expect(ring.open(frame, "request")).toEqual({ ok: false, reason: "badTag" });
    const flipped = Uint8Array.from(frame);
    flipped[flipped.length - 20] ^= 1;
    expect(ring.open(flipped, "packet")).toEqual({ ok: false, reason: "badTag" });
    expect(ring.open(frame.subarray(0, FRAME_OVERHEAD - 1), "packet")).toEqual({ ok: false, reason: "badLength" });
    expect(ring.open(frame.subarray(0, frame.length - 1), "packet")).toEqual({ ok: false, reason: "badTag" });
    const version = Uint8Array.from(frame);
    version[0] = 9;
    expect(ring.open(version, "packet")).toEqual({ ok: false, reason: "garbage" });
  });

  it("never throws and never accepts arbitrary or bit-flipped bytes (property)", () => {
    const ring = new Keyring(k1);
    const good = ring.seal(text("the real thing"), "packet");
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), (bytes) => {
        expect(ring.open(bytes, "packet").ok).toBe(false);
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: good.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, mask) => {
        const bad = Uint8Array.from(good);
        bad[at] ^= mask;
        expect(ring.open(bad, "packet").ok).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it("rotates without a moment where two nodes cannot talk: OLD,NEW; NEW,OLD; NEW", () => {
    const a = new Keyring(k1);
    const b = new Keyring(k1);
    const talk = (): boolean =>
      b.open(a.seal(text("x"), "packet"), "packet").ok && a.open(b.seal(text("y"), "packet"), "packet").ok;
    for (const keys of [[k1, k2], [k2, k1], [k2]]) {
      a.replace(keys);
      expect(talk()).toBe(true);
      b.replace(keys);
      expect(talk()).toBe(true);
    }
    expect(a.ids()).toEqual(new Keyring(k2).ids());
    // A frame under the removed key is now refused.
    expect(a.open(new Keyring(k1).seal(text("old"), "packet"), "packet")).toEqual({ ok: false, reason: "badKey" });
  });

  it("explains a bad key with a code", () => {
    expect(codeOf(() => new Keyring(new Uint8Array(16)))).toBe("GOSSIP_KEY_INVALID");
  });

  it("loads a key file (base64, primary first, comments allowed) and refuses a bad one", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-keys-"));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const good = join(dir, "good");
    writeFileSync(
      good,
      `# cluster key\n${Buffer.from(k2).toString("base64")}\n\n${Buffer.from(k1).toString("base64")}\n`,
      { mode: 0o600 },
    );
    expect((await Keyring.fromKeyFile(good)).ids()).toEqual(new Keyring(k2, [k1]).ids());
    const bad = join(dir, "bad");
    writeFileSync(bad, "bm90IGEga2V5\n", { mode: 0o600 });
    await expect(Keyring.fromKeyFile(bad)).rejects.toMatchObject({ code: "GOSSIP_KEY_FILE_INVALID" });
    // As ssh: a key file group or others can read is refused, with the chmod to run.
    for (const mode of [0o640, 0o604, 0o644]) {
      chmodSync(good, mode);
      await expect(Keyring.fromKeyFile(good)).rejects.toMatchObject({
        code: "GOSSIP_KEY_FILE_EXPOSED",
        message: expect.stringContaining(`mode 0${mode.toString(8)}): run \`chmod 600 ${good}\``),
      });
    }
    // A directory, or nothing at all, is named with its path.
    await expect(Keyring.fromKeyFile(dir)).rejects.toMatchObject({
      code: "GOSSIP_KEY_FILE_UNREADABLE",
      message: expect.stringContaining(`key file ${dir}: it is a directory; pass the key file itself`),
    });
    // A joining node must get the cluster's key, not a new one: keygen is for a new cluster only.
    await expect(Keyring.fromKeyFile(join(dir, "none"))).rejects.toMatchObject({
      code: "GOSSIP_KEY_FILE_UNREADABLE",
      message: expect.stringMatching(
        new RegExp(
          `${join(dir, "none")}: ENOENT.*; copy the cluster's key file here \\(for a new cluster only: \`weft keygen `,
        ),
      ),
    });
  });

  it("checks every key line whole and names the line and what is wrong, never loading part of a file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-keys-"));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const b64 = (k: Uint8Array) => Buffer.from(k).toString("base64");
    const file = join(dir, "key");
    const load = async (text: string) => {
      writeFileSync(file, text, { mode: 0o600 });
      return Keyring.fromKeyFile(file);
    };
    // What keygen writes, the same without its '=' padding, CRLF line ends: all load.
    expect((await load(`${b64(k1)}\r\n${b64(k2).replace(/=$/, "")}\r\n`)).ids()).toEqual(new Keyring(k1, [k2]).ids());
    // Base64url, which loaded before lines were checked, padded or not.
    const url = new Uint8Array(32).fill(0xfb);
    expect(Buffer.from(url).toString("base64")).toMatch(/[+/]/);
    for (const line of [Buffer.from(url).toString("base64url"), `${Buffer.from(url).toString("base64url")}=`])
      expect((await load(`${line}\n`)).ids(), line).toEqual(new Keyring(url).ids());
    // Buffer's decoder stops at '=' and skips what is not base64: each of these loaded k1 alone.
    const wrong: Array<[string, string]> = [
      [`# new key below\n${b64(k1)} ${b64(k2)}\n`, "line 2 holds more than one word (two keys on one line?)"],
      [`${b64(k1)},${b64(k2)}\n`, "line 1 holds more than one word"],
      [`${b64(k1)}${b64(k2)}\n`, "line 1 is not canonical base64"],
      [`${b64(k1)}\n${Buffer.from(k2).toString("hex")}\n`, "line 2 decodes to 48 bytes (hex?), not 32"],
      [`${b64(k1)}\n\n${b64(generateKey().subarray(0, 16))}\n`, "line 3 decodes to 16 bytes, not 32"],
      [`${b64(k1).slice(0, 20)}!${b64(k1).slice(21)}\n`, "line 1 has a character outside base64 at column 21"],
      // The last character's low bits are not part of the key: "AQ..E=" and "AQ..F=" would both load.
      [`${b64(k1).replace(/E=$/, "F=")}\n`, "line 1 is not canonical base64"],
      ["# only a comment\n\n", "holds no key"],
    ];
    for (const [text, why] of wrong) {
      const err = await load(text).then(
        () => undefined,
        (e: WeftError) => e,
      );
      expect(err, why).toMatchObject({ code: "GOSSIP_KEY_FILE_INVALID", message: expect.stringContaining(why) });
      expect(err!.message).toContain("one base64 key a line, as `weft keygen` writes");
      // Never the key material itself.
      expect(err!.message).not.toContain(b64(k1).slice(0, 12));
    }
  });

  it("refuses a FIFO at once, never waiting for a writer", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-keys-"));
    const fifo = join(dir, "key");
    execFileSync("mkfifo", ["-m", "600", fifo]);
    onTestFinished(() => {
      // A read that waits in open() (the thread pool's) is let go by a writer.
      try {
        closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch {}
      rmSync(dir, { recursive: true, force: true });
    });
    const read = Keyring.fromKeyFile(fifo).then(
      () => "loaded",
      (e: WeftError) => e,
    );
    const blocked = new Promise((r) => setTimeout(() => r("still waiting after 10 s"), 10_000).unref());
    const err = await Promise.race([read, blocked]);
    expect(err).toMatchObject({
      code: "GOSSIP_KEY_FILE_UNREADABLE",
      message: expect.stringContaining(`key file ${fifo}: it is a FIFO; pass the key file itself (a regular file)`),
    });
    // keygen refuses a path that exists: not advised here.
    expect((err as WeftError).message).not.toContain("keygen");
  });

  it("reads the key file only if this process's user or root owns it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "weft-keys-"));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, "key");
    writeFileSync(file, `${Buffer.from(k1).toString("base64")}\n`, { mode: 0o600 });
    // Mode 0600, but another user's: that user can read it and chmod it at will.
    chownSync(file, 65534, 65534);
    await expect(Keyring.fromKeyFile(file)).rejects.toMatchObject({
      code: "GOSSIP_KEY_FILE_NOT_OWNED",
      message: expect.stringContaining(
        `owned by uid 65534, neither this process's user (uid ${process.getuid!()}) nor root: run \`chown ${process.getuid!()} ${file}\``,
      ),
    });
    chownSync(file, process.getuid!(), 0);
    expect((await Keyring.fromKeyFile(file)).ids()).toEqual(new Keyring(k1).ids());
  });

  it("replaces its keys whole, or not at all, and shows key ids, never keys", () => {
    const ring = new Keyring(k1);
    const k3 = generateKey();
    const before = ring.ids();
    expect(before.primary).toMatch(/^[0-9a-f]{8}$/);
    expect(codeOf(() => ring.replace([k2, new Uint8Array(16)]))).toBe("GOSSIP_KEY_INVALID");
    expect(ring.ids()).toEqual(before);
    ring.replace([k1, k2]);
    const sealedK1 = ring.seal(text("k1"), "packet");
    ring.replace([k2, k1]);
    expect(ring.open(sealedK1, "packet").ok).toBe(true);
    expect(new Keyring(k2).open(ring.seal(text("k2"), "packet"), "packet").ok).toBe(true);
    ring.replace([k3]);
    expect(ring.ids()).toEqual(new Keyring(k3).ids());
    expect(ring.open(sealedK1, "packet")).toEqual({ ok: false, reason: "badKey" });
    expect(ring.ids()).toEqual({ primary: new Keyring(k3).ids().primary, installed: [new Keyring(k3).ids().primary] });
  });

  it("tells its listeners of a replace only when the key ids changed; one that throws is contained, the keys in force and the rest told", () => {
    const ring = new Keyring(k1, [k2]);
    const told: string[] = [];
    ring.onReplaced(() => told.push("first"));
    // The same keys (a SIGHUP for net-conf.json alone), in another order of the others too.
    expect(ring.replace([k1, k2])).toEqual([]);
    expect(told).toEqual([]);
    const k3 = generateKey();
    ring.replace([k1, k3, k2]);
    ring.replace([k1, k2, k3]);
    expect(told).toEqual(["first"]);
    ring.replace([k2, k1, k3]);
    ring.replace([k2, k1]);
    expect(told).toEqual(["first", "first", "first"]);
    const broke = new Error("listener broke");
    ring.onReplaced(() => {
      throw broke;
    });
    ring.onReplaced(() => told.push("last"));
    expect(ring.replace([k1])).toEqual([broke]);
    expect(ring.ids()).toEqual(new Keyring(k1).ids());
    expect(told).toEqual(["first", "first", "first", "first", "last"]);
  });
});

const limits = { maxMetaBytes: 512, maxFrameBytes: 1 << 20 };
const name = fc.string({ minLength: 1, maxLength: 40 });
const uint = fc.integer({ min: 0, max: 2 ** 40 });
const port = fc.integer({ min: 1, max: 65535 });
const bytes = (max: number) => fc.uint8Array({ maxLength: max });
const state = fc.constantFrom("alive", "suspect", "dead", "left" as const);
/** Hosts as records carry them: IP literals, dotted quads (compact in version 2) or IPv6 (text). */
const host = fc.oneof(
  fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join(".")),
  fc.ipV6(),
);
const vsn = fc.nat(255);
const compactRecord = fc.record({ name, host, port, incarnation: uint, state, meta: bytes(64), stateAgeMs: uint, vsn });
const message: fc.Arbitrary<Message> = fc.oneof(
  fc.record({ kind: fc.constant("ping" as const), seq: uint, target: name }),
  fc.record({
    kind: fc.constant("indirectPing" as const),
    seq: uint,
    target: name,
    host,
    port,
    wantNack: fc.boolean(),
  }),
  fc.record({ kind: fc.constantFrom("ack" as const, "nack" as const), seq: uint }),
  fc.record({ kind: fc.constant("alive" as const), node: name, incarnation: uint, host, port, meta: bytes(512) }),
  fc.record({ kind: fc.constantFrom("suspect" as const, "dead" as const), node: name, incarnation: uint, from: name }),
  fc.record({ kind: fc.constant("user" as const), payload: bytes(2000) }),
  fc.record({
    kind: fc.constant("pushPull" as const),
    join: fc.boolean(),
    nodes: fc.array(fc.record({ name, host, port, incarnation: uint, state, meta: bytes(64), stateAgeMs: uint }), {
      maxLength: 5,
    }),
    userState: bytes(100),
  }),
  fc.record({
    kind: fc.constant("pull" as const),
    salt: fc.nat({ max: 0xffffffff }),
    windowMs: uint,
    digest: bytes(MAX_DIGEST_BYTES),
  }),
  fc.record({
    kind: fc.constant("pullReply" as const),
    nodes: fc.array(fc.record({ name, host, port, incarnation: uint, state, meta: bytes(64), stateAgeMs: uint }), {
      maxLength: 5,
    }),
  }),
  fc.record({ kind: fc.constant("alive2" as const), node: name, incarnation: uint, host, port, meta: bytes(512), vsn }),
  fc.record({ kind: fc.constant("pullReply2" as const), nodes: fc.array(compactRecord, { maxLength: 5 }) }),
  fc.record({
    kind: fc.constant("pushPull2" as const),
    join: fc.boolean(),
    nodes: fc.array(compactRecord, { maxLength: 5 }),
    userState: bytes(100),
  }),
) as fc.Arbitrary<Message>;

describe("envelope codec", () => {
  const decoder = new EnvelopeDecoder(limits);

  it("round-trips any messages (property)", () => {
    fc.assert(
      fc.property(name, fc.array(message, { maxLength: 6 }), (sender, messages) => {
        const encoded = messages.map(encodeMessage);
        for (const [i, e] of encoded.entries()) expect(kindOfEncoded(e)).toBe(messages[i].kind);
        const env = decoder.decode(buildEnvelope(envelopeHeader(sender), encoded));
        expect(env?.sender).toBe(sender);
        expect(env?.messages.map((m) => m.message)).toEqual(messages);
        expect(env?.messages.map((m) => m.bytes)).toEqual(encoded.map((e) => e.length));
      }),
      { numRuns: 300 },
    );
  });

  it("decodes arbitrary bytes to undefined or a valid envelope, never throwing (property)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1500 }), (junk) => {
        const env = decoder.decode(junk);
        if (env) for (const m of env.messages) expect(MESSAGE_KINDS).toContain(m.message.kind);
      }),
      { numRuns: 1000 },
    );
  });

  it("refuses well-formed msgpack with a wrong field", () => {
    const header = envelopeHeader("a");
    const ok = encodeMessage({
      kind: "alive",
      node: "b",
      incarnation: 1,
      host: "198.18.0.2",
      port: 1,
      meta: new Uint8Array(0),
    });
    expect(decoder.decode(buildEnvelope(header, [ok]))).toBeDefined();
    const tooBigMeta = encodeMessage({
      kind: "alive",
      node: "b",
      incarnation: 1,
      host: "198.18.0.2",
      port: 1,
      meta: new Uint8Array(513),
    });
    const badPort = encodeMessage({
      kind: "alive",
      node: "b",
      incarnation: 1,
      host: "198.18.0.2",
      port: 70_000,
      meta: new Uint8Array(0),
    });
    const alive = { kind: "alive", node: "b", incarnation: 1, meta: new Uint8Array(0) } as const;
    // Port 0 is no member's address (sending there throws), nor is a name (a DNS lookup per packet).
    const portZero = encodeMessage({ ...alive, host: "198.18.0.2", port: 0 });
    const compactPortZero = encodeMessage({ ...alive, kind: "alive2", host: "198.18.0.2", port: 0, vsn: 2 });
    const named = encodeMessage({ ...alive, host: "h", port: 1 });
    const negative = encodeMessage({ kind: "ack", seq: -1 });
    const bigDigest = encodeMessage({
      kind: "pull",
      salt: 1,
      windowMs: 1,
      digest: new Uint8Array(MAX_DIGEST_BYTES + 1),
    });
    const bigSalt = encodeMessage({ kind: "pull", salt: 2 ** 32, windowMs: 1, digest: new Uint8Array(8) });
    const emptyName = encodeMessage({ kind: "suspect", node: "", incarnation: 1, from: "a" });
    for (const bad of [
      tooBigMeta,
      badPort,
      portZero,
      compactPortZero,
      named,
      negative,
      emptyName,
      bigDigest,
      bigSalt,
    ]) {
      // One bad message spoils the whole frame: nothing in it is acted on.
      expect(decoder.decode(buildEnvelope(header, [ok, bad]))).toBeUndefined();
    }
    expect(decoder.decode(envelopeHeader("a").subarray(0, 3))).toBeUndefined();
    expect(decoder.decode(new Uint8Array(0))).toBeUndefined();
  });

  it("refuses array headers claiming more than the bytes left, and nesting no message has, before allocating", async () => {
    // One packet's worth of 250 nested array32 headers, each claiming 4 Mi elements: the msgpack
    // decoder allocates each array's slots at its header (32 MB each), and the agent died of it.
    const bomb = new Uint8Array(250 * 5);
    for (let i = 0; i < 250; i++) bomb.set([0xdd, 0x00, 0x40, 0x00, 0x00], i * 5);
    // And a stream's worth of one-element arrays nested a million deep: honest counts, but the
    // decoder builds some 150 bytes a level; only a depth bound (no message nests deeper than 4: a
    // push-pull's records' addresses) stops that one.
    const deep = new Uint8Array(1 << 20).fill(0x91);
    deep[deep.length - 1] = 0;
    const inBin = (b: Uint8Array) => buildEnvelope(envelopeHeader("a"), [b]);
    // In a bin, as messages come, and bare after the envelope's header.
    const frames = [inBin(bomb), Buffer.concat([envelopeHeader("a"), bomb]), inBin(deep)];
    // Decoded in a thread whose heap is bounded, so that without the check it is the thread that dies.
    const thread = new Worker(
      `const { parentPort, workerData } = require("node:worker_threads");
       import(workerData.module).then(({ EnvelopeDecoder }) => {
         const d = new EnvelopeDecoder({ maxMetaBytes: 512, maxFrameBytes: 4 * 1024 * 1024 });
         parentPort.postMessage(workerData.frames.map((f) => d.decode(f) === undefined));
       });`,
      {
        eval: true,
        workerData: { module: new URL("../../dist/src/control/gossip/messages.js", import.meta.url).href, frames },
        resourceLimits: { maxOldGenerationSizeMb: 64 },
      },
    );
    const refused = await new Promise((resolve, reject) => {
      thread.once("message", resolve);
      thread.once("error", reject);
    });
    expect(refused).toEqual([true, true, true]);
  });
});

describe("mixed versions on the wire", () => {
  it("keeps every message kind an older agent knows at its code and encoding; pulls are new kinds after them", () => {
    // Codes are positions: an older agent decodes kinds 0..8 as before and refuses 9 and 10.
    expect(MESSAGE_KINDS.slice(0, 9)).toEqual([
      "ping",
      "indirectPing",
      "ack",
      "nack",
      "alive",
      "suspect",
      "dead",
      "user",
      "pushPull",
    ]);
    expect(MESSAGE_KINDS.indexOf("pull")).toBe(9);
    expect(MESSAGE_KINDS.indexOf("pullReply")).toBe(10);
    // A push-pull is still [code, join, [[name, host, port, incarnation, state, meta, age]], userState].
    const meta = text("m");
    expect(
      encodeMessage({
        kind: "pushPull",
        join: false,
        nodes: [{ name: "a", host: "h", port: 1, incarnation: 2, state: "alive", meta, stateAgeMs: 3 }],
        userState: new Uint8Array(0),
      }),
    ).toEqual(encode([8, false, [["a", "h", 1, 2, 0, meta, 3]], new Uint8Array(0)]));
    expect(encodeMessage({ kind: "alive", node: "a", incarnation: 2, host: "h", port: 1, meta })).toEqual(
      encode([4, "a", 2, "h", 1, meta]),
    );
  });

  it("version 2 kinds come after them, with compact records pinned byte for byte", () => {
    expect(MESSAGE_KINDS.slice(11)).toEqual(["alive2", "pullReply2", "pushPull2"]);
    expect(MESSAGE_KINDS.map(protocolOf)).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2]);
    const meta = text("m");
    // An IPv4 address and port as 6 bytes, network order; the subject's version last.
    expect(
      encodeMessage({ kind: "alive2", node: "a", incarnation: 2, host: "198.18.0.1", port: 7946, meta, vsn: 2 }),
    ).toEqual(encode([11, "a", 2, Uint8Array.of(198, 18, 0, 1, 0x1f, 0x0a), meta, 2]));
    // Anything else stays text: [host, port].
    expect(
      encodeMessage({ kind: "alive2", node: "a", incarnation: 2, host: "2001:2::1", port: 1, meta, vsn: 0 }),
    ).toEqual(encode([11, "a", 2, ["2001:2::1", 1], meta, 0]));
    // A live record of age 0 is [name, incarnation, addr, meta, vsn]; any other adds [state, age].
    const live: NodeState = {
      name: "a",
      host: "10.0.0.1",
      port: 1,
      incarnation: 2,
      state: "alive",
      meta,
      stateAgeMs: 0,
      vsn: 2,
    };
    const dead: NodeState = { ...live, state: "dead", stateAgeMs: 5 };
    expect(encodeMessage({ kind: "pushPull2", join: true, nodes: [live, dead], userState: new Uint8Array(0) })).toEqual(
      encode([
        13,
        true,
        [
          ["a", 2, Uint8Array.of(10, 0, 0, 1, 0, 1), meta, 2],
          ["a", 2, Uint8Array.of(10, 0, 0, 1, 0, 1), meta, 2, 2, 5],
        ],
        new Uint8Array(0),
      ]),
    );
    expect(encodeMessage({ kind: "pullReply2", nodes: [live] })).toEqual(
      encode([12, [["a", 2, Uint8Array.of(10, 0, 0, 1, 0, 1), meta, 2]]]),
    );
    // The long form never says what the short one says (one encoding per record).
    const decoder = new EnvelopeDecoder(limits);
    const redundant = encode([12, [["a", 2, Uint8Array.of(10, 0, 0, 1, 0, 1), meta, 2, 0, 0]]]);
    expect(decoder.decode(buildEnvelope(envelopeHeader("s"), [redundant]))).toBeUndefined();
  });

  it("a version-1 decoder (an older agent) refuses any frame holding a version-2 kind, and reads the rest as before (property)", () => {
    const v1 = new EnvelopeDecoder({ ...limits, maxProtocol: 1 });
    const v2 = new EnvelopeDecoder(limits);
    fc.assert(
      fc.property(name, fc.array(message, { minLength: 1, maxLength: 6 }), (sender, messages) => {
        const frame = buildEnvelope(envelopeHeader(sender), messages.map(encodeMessage));
        const newer = messages.some((m) => protocolOf(m.kind) > 1);
        expect(v1.decode(frame) === undefined).toBe(newer);
        if (!newer) expect(v1.decode(frame)).toEqual(v2.decode(frame));
      }),
      { numRuns: 300 },
    );
  });

  it("alive2 and a compact record say what alive and a version-1 record say, in fewer bytes for IPv4 (property)", () => {
    const decoder = new EnvelopeDecoder(limits);
    const one = (m: Message): Message | undefined =>
      decoder.decode(buildEnvelope(envelopeHeader("s"), [encodeMessage(m)]))?.messages[0].message;
    fc.assert(
      fc.property(compactRecord, (n) => {
        const { name: node, incarnation, host: h, port: p, meta } = n;
        const old = one({ kind: "alive", node, incarnation, host: h, port: p, meta });
        const compact = one({ kind: "alive2", node, incarnation, host: h, port: p, meta, vsn: n.vsn });
        expect(compact).toEqual({ ...old, kind: "alive2", vsn: n.vsn });
        const oldRecord = one({ kind: "pullReply", nodes: [n] });
        const newRecord = one({ kind: "pullReply2", nodes: [n] });
        const { vsn: _, ...withoutVersion } = n;
        expect(oldRecord).toEqual({ kind: "pullReply", nodes: [withoutVersion] });
        expect(newRecord).toEqual({ kind: "pullReply2", nodes: [n] });
        // For the versions that exist (1 and 2), never larger, and smaller once the port takes
        // more than msgpack's one-byte integer (128 and up: every usable gossip port; fast-check
        // found a tie at 0.0.0.0:0, and a version of 128 takes two bytes).
        if (/^\d+\.\d+\.\d+\.\d+$/.test(h) && `${compactAddrHost(h)}` === h && n.vsn < 128) {
          expect(nodeStateSize(n, true)).toBeLessThanOrEqual(nodeStateSize(n));
          if (p >= 128) expect(nodeStateSize(n, true)).toBeLessThan(nodeStateSize(n));
        }
      }),
      { numRuns: 300 },
    );
  });
});

/** A dotted quad as version 2 writes it back (octets as numbers): equal to the input only when it is canonical. */
function compactAddrHost(h: string): string {
  const octets = h.split(".").map(Number);
  return octets.every((o) => o <= 255) ? octets.join(".") : "";
}
