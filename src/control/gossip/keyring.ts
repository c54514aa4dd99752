// AES-256-GCM keyring for every gossip frame, UDP and TCP alike. Frame layout:
//
//   version (1) | key id (4) | nonce (12, random) | ciphertext | tag (16)
//
// The key id (first 4 bytes of a hash of the key) names the key without trying every key as
// memberlist does; the version, key id and frame kind (packet, stream request, stream response)
// are authenticated as associated data, so a frame cannot be replayed as another kind.
//
// Rotation without downtime, one step at a time on every node, each a key file the agent takes on
// SIGHUP (replace): OLD,NEW — every node now opens both; NEW,OLD — nodes seal with the new key,
// which every node can already open; NEW — the old one is gone.
//
// Random 96-bit nonces: NIST SP 800-38D bounds one key to 2^32 frames, sealed by all nodes
// together, for a collision chance below 2^-32. A node seals about 2 frames/s at rest and about
// 40–48/s while news flows (gossip, 4 pulls/s and their replies of up to 3 packets): a 1,000-node
// cluster spends a key in 25 days at rest, 25–30 hours under constant churn, so rotate keys by
// the cluster's frame rate (README: weekly below about 7,000 frames/s, ~150 nodes under churn).
//
// Replay: GCM authenticates but does not stop a captured frame from being sent again. Replays
// are harmless to membership because every state change is ordered by (incarnation, state) and
// only moves forward (see state.ts). A replayed stream request is answered, so the transport
// closes each connection once its reply is out (udp-tcp.ts): else replays held every slot. A
// freshness field would stop that but changes the wire.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { type BigIntStats, constants } from "node:fs";
import { open } from "node:fs/promises";
import { WeftError } from "../../errors.js";

export const KEY_BYTES = 32;
const FRAME_VERSION = 1;
const KEY_ID_BYTES = 4;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + KEY_ID_BYTES;
/** Bytes a sealed frame adds to its plaintext. */
export const FRAME_OVERHEAD = HEADER_BYTES + NONCE_BYTES + TAG_BYTES;

export type FrameKind = "packet" | "request" | "response";
const KIND_BYTE: Record<FrameKind, number> = { packet: 1, request: 2, response: 3 };

/** Why a frame was refused; each is counted, none changes state. */
export type FrameRejection = "badLength" | "garbage" | "badKey" | "badTag";

export type OpenResult = { ok: true; plaintext: Uint8Array } | { ok: false; reason: FrameRejection };

/** A new random key (for tests and for `weft keygen`). */
export function generateKey(): Uint8Array {
  return new Uint8Array(randomBytes(KEY_BYTES));
}

/** Nonces come from a pooled CSPRNG buffer: one randomBytes call per 512 frames instead of one each. */
const NONCE_POOL_FRAMES = 512;
let noncePool = Buffer.alloc(0);
let nonceAt = 0;
function nextNonce(): Buffer {
  if (nonceAt + NONCE_BYTES > noncePool.length) {
    noncePool = randomBytes(NONCE_BYTES * NONCE_POOL_FRAMES);
    nonceAt = 0;
  }
  const nonce = noncePool.subarray(nonceAt, nonceAt + NONCE_BYTES);
  nonceAt += NONCE_BYTES;
  return nonce;
}

function keyId(key: Uint8Array): number {
  return createHash("sha256").update("weft-gossip-key-id\0").update(key).digest().readUInt32BE(0);
}

function hexId(id: number): string {
  return id.toString(16).padStart(2 * KEY_ID_BYTES, "0");
}

/** The key id a frame names (hex), for logs about frames under a key this node does not hold. */
export function frameKeyId(frame: Uint8Array): string {
  return hexId(Buffer.from(frame.buffer, frame.byteOffset, frame.length).readUInt32BE(1));
}

/** Reads of a key file that changed while read before it is refused (it is being written). */
const KEY_FILE_READS = 3;

/** Reads a key file: its keys, primary first. Throws GOSSIP_KEY_FILE_* saying what to fix. */
export async function readKeyFile(path: string): Promise<Uint8Array[]> {
  let text: string | undefined;
  try {
    // One handle for the checks and the read: a file swapped between a stat and a read is never
    // read. Non-blocking: a FIFO's open would wait for a writer (and hold every later reload).
    const file = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      for (let read = 0; read < KEY_FILE_READS && text === undefined; read++) {
        const st = await file.stat({ bigint: true });
        if (!st.isFile()) throw new Error(`it is ${fileKind(st)}; pass the key file itself (a regular file)`);
        // As ssh with private keys: a key others can read, or a file another user can replace or
        // chmod, is a key others may have.
        const uid = process.getuid?.() ?? 0;
        if (Number(st.uid) !== uid && st.uid !== 0n) {
          throw new WeftError(
            "GOSSIP_KEY_FILE_NOT_OWNED",
            `key file ${path} is owned by uid ${st.uid}, neither this process's user (uid ${uid}) nor root: run \`chown ${uid} ${path}\` (and make a new key if that user may have read it)`,
          );
        }
        if ((st.mode & 0o077n) !== 0n) {
          throw new WeftError(
            "GOSSIP_KEY_FILE_EXPOSED",
            `key file ${path} is readable or writable by group or others (mode ${(st.mode & 0o777n).toString(8).padStart(4, "0")}): run \`chmod 600 ${path}\` (and make a new key if others may have read it)`,
          );
        }
        const bytes = await file.read({ buffer: Buffer.alloc(Number(st.size) + 1), position: 0 });
        // A file rewritten in place may be read cut at a line end, which parses: one whose size or
        // times moved meanwhile is read again. (One between two writes cannot be told: README says
        // to replace it whole.)
        const after = await file.stat({ bigint: true });
        if (
          BigInt(bytes.bytesRead) === st.size &&
          after.size === st.size &&
          after.mtimeNs === st.mtimeNs &&
          after.ctimeNs === st.ctimeNs
        )
          text = bytes.buffer.toString("utf8", 0, bytes.bytesRead);
      }
    } finally {
      await file.close();
    }
  } catch (cause) {
    if (cause instanceof WeftError) throw cause;
    throw new WeftError(
      "GOSSIP_KEY_FILE_UNREADABLE",
      `cannot read key file ${path}: ${(cause as Error).message}${
        // weft keygen refuses a path that exists: advise it only where nothing is.
        (cause as NodeJS.ErrnoException).code === "ENOENT"
          ? `; copy the cluster's key file here (for a new cluster only: \`weft keygen ${path}\`)`
          : ""
      }`,
      { cause },
    );
  }
  if (text === undefined) {
    throw new WeftError(
      "GOSSIP_KEY_FILE_UNREADABLE",
      `key file ${path} changed while read, ${KEY_FILE_READS} times: replace it whole (write a new file beside it, then mv it over the key file), then send SIGHUP again`,
    );
  }
  const keys: Uint8Array[] = [];
  for (const [i, raw] of text.split("\n").entries()) {
    // Base64url ('-', '_') as base64: Buffer decoded both before lines were checked, so such
    // files loaded then.
    const line = raw.trim().replaceAll("-", "+").replaceAll("_", "/");
    if (line === "" || line.startsWith("#")) continue;
    const wrong = keyLineProblem(line);
    if (wrong) {
      throw new WeftError(
        "GOSSIP_KEY_FILE_INVALID",
        `key file ${path}: line ${i + 1} ${wrong}; one base64 key a line, as \`weft keygen\` writes, primary first`,
      );
    }
    keys.push(Buffer.from(line, "base64"));
  }
  if (keys.length === 0) {
    throw new WeftError(
      "GOSSIP_KEY_FILE_INVALID",
      `key file ${path} holds no key; one base64 key a line, as \`weft keygen\` writes, primary first`,
    );
  }
  return keys;
}

function fileKind(st: BigIntStats): string {
  if (st.isDirectory()) return "a directory";
  if (st.isFIFO()) return "a FIFO";
  if (st.isSocket()) return "a socket";
  return st.isCharacterDevice() || st.isBlockDevice() ? "a device" : "not a regular file";
}

/**
 * What is wrong with a key line (never quoting it: it may be a key), or undefined. Buffer's base64
 * decoder stops at '=' and skips what is not base64, so "OLD NEW" would load OLD alone: each line
 * is checked whole.
 */
function keyLineProblem(line: string): string | undefined {
  if (/[\s,;]/.test(line)) return "holds more than one word (two keys on one line?)";
  const bad = line.search(/[^A-Za-z0-9+/=]/);
  if (bad >= 0) return `has a character outside base64 at column ${bad + 1}`;
  const bytes = Buffer.from(line, "base64");
  if (bytes.length !== KEY_BYTES) {
    const hex = /^[0-9a-fA-F]+$/.test(line) && line.length === 2 * KEY_BYTES ? " (hex?)" : "";
    return `decodes to ${bytes.length} bytes${hex}, not ${KEY_BYTES}`;
  }
  // Padded as keygen writes, or without the padding; nothing else decodes to these bytes.
  const canonical = bytes.toString("base64");
  if (line !== canonical && line !== canonical.replace(/=+$/, ""))
    return "is not canonical base64 (misplaced '=' or stray bits in the last character)";
  return undefined;
}

function checkKey(key: Uint8Array): Buffer {
  if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) {
    throw new WeftError(
      "GOSSIP_KEY_INVALID",
      `a gossip key must be ${KEY_BYTES} bytes (AES-256); generate one with 32 random bytes`,
    );
  }
  return Buffer.from(key);
}

export class Keyring {
  /** Installed keys by id. */
  private readonly byId = new Map<number, Buffer>();
  private primaryId: number;
  /** Told of each replace (see onReplaced). */
  private readonly replaceListeners = new Set<() => void>();

  /** The primary key seals; every installed key opens. */
  constructor(primary: Uint8Array, others: readonly Uint8Array[] = []) {
    this.primaryId = this.add(primary);
    for (const key of others) this.add(key);
  }

  /**
   * A key file holds base64 keys, one a line, the first being the primary; blank lines and lines
   * starting with '#' are ignored.
   */
  static async fromKeyFile(path: string): Promise<Keyring> {
    const keys = await readKeyFile(path);
    return new Keyring(keys[0], keys.slice(1));
  }

  /**
   * Makes the ring hold exactly `keys`, the first as primary: installs the new, uses the first,
   * removes the rest. All or nothing: a key refused leaves the ring as it was. Returns what the
   * listeners threw: the keys are in force by then, and every listener is told whatever another threw.
   */
  replace(keys: readonly Uint8Array[]): unknown[] {
    const next = new Keyring(keys[0], keys.slice(1));
    const changed =
      next.primaryId !== this.primaryId ||
      next.byId.size !== this.byId.size ||
      [...next.byId.keys()].some((id) => !this.byId.has(id));
    this.byId.clear();
    for (const [id, key] of next.byId) this.byId.set(id, key);
    this.primaryId = next.primaryId;
    // A SIGHUP that left the key file as it was is no news (the join would start a round for it).
    if (!changed) return [];
    const thrown: unknown[] = [];
    for (const listener of this.replaceListeners) {
      try {
        listener();
      } catch (err) {
        thrown.push(err);
      }
    }
    return thrown;
  }

  /** Calls `listener` after each replace that took (none refused) and changed the key ids; returns what stops that. */
  onReplaced(listener: () => void): () => void {
    this.replaceListeners.add(listener);
    return () => this.replaceListeners.delete(listener);
  }

  /** Key ids (hex, safe to show: a hash prefix), the primary's and every installed key's, primary first. */
  ids(): { primary: string; installed: string[] } {
    return {
      primary: hexId(this.primaryId),
      installed: [this.primaryId, ...[...this.byId.keys()].filter((id) => id !== this.primaryId)].map(hexId),
    };
  }

  seal(plaintext: Uint8Array, kind: FrameKind): Uint8Array {
    const key = this.byId.get(this.primaryId)!;
    const header = Buffer.allocUnsafe(HEADER_BYTES);
    header[0] = FRAME_VERSION;
    header.writeUInt32BE(this.primaryId, 1);
    const nonce = nextNonce();
    const cipher = createCipheriv("aes-256-gcm", key, nonce);
    cipher.setAAD(aad(header, kind));
    const body = cipher.update(plaintext);
    const final = cipher.final();
    return Buffer.concat([header, nonce, body, final, cipher.getAuthTag()]);
  }

  /** Never throws: anything but an authentic frame of this kind under an installed key is refused. */
  open(frame: Uint8Array, kind: FrameKind): OpenResult {
    if (frame.length < FRAME_OVERHEAD) return { ok: false, reason: "badLength" };
    if (frame[0] !== FRAME_VERSION) return { ok: false, reason: "garbage" };
    const buf = Buffer.from(frame.buffer, frame.byteOffset, frame.length);
    const key = this.byId.get(buf.readUInt32BE(1));
    if (!key) return { ok: false, reason: "badKey" };
    try {
      const decipher = createDecipheriv("aes-256-gcm", key, buf.subarray(HEADER_BYTES, HEADER_BYTES + NONCE_BYTES));
      decipher.setAAD(aad(buf.subarray(0, HEADER_BYTES), kind));
      decipher.setAuthTag(buf.subarray(buf.length - TAG_BYTES));
      const body = decipher.update(buf.subarray(HEADER_BYTES + NONCE_BYTES, buf.length - TAG_BYTES));
      return { ok: true, plaintext: Buffer.concat([body, decipher.final()]) };
    } catch {
      return { ok: false, reason: "badTag" };
    }
  }

  private add(key: Uint8Array): number {
    const copy = checkKey(key);
    const id = keyId(copy);
    const existing = this.byId.get(id);
    if (existing && !existing.equals(copy)) {
      throw new WeftError("GOSSIP_KEY_ID_COLLISION", "two keys share a key id (chance 2^-32); generate another key");
    }
    this.byId.set(id, copy);
    return id;
  }
}

function aad(header: Uint8Array, kind: FrameKind): Buffer {
  return Buffer.concat([header, Buffer.of(KIND_BYTE[kind])]);
}
