// The wire: messages → envelope → sealed frame → transport, and back. Outgoing packets are
// compound: the messages given, then as many queued broadcasts as fit in maxPacketBytes.
// Incoming frames are size-checked, opened and fully decoded before anything acts on them; a
// refused frame is counted by reason and otherwise ignored; one under a key this node does not
// hold is also logged, at most once a minute per address.
import type { Addr, Clock, Transport } from "../runtime.js";
import type { MemberlistConfig } from "./config.js";
import { WeftError } from "../../errors.js";
import { formatHostPort } from "../../net/ip.js";
import { FRAME_OVERHEAD, frameKeyId, type FrameKind, type Keyring } from "./keyring.js";
import {
  buildEnvelope,
  encodeMessage,
  EnvelopeDecoder,
  envelopeHeader,
  framedSize,
  kindOfEncoded,
  type Envelope,
  type Message,
} from "./messages.js";
import { contain, type GossipCounters, type GossipLogger } from "./observability.js";

/** What a queued broadcast costs in an envelope besides its bytes (its bin header, < 64 KiB). */
export const BROADCAST_OVERHEAD = 3;

/** GOSSIP_FRAME_UNKNOWN_KEY is logged at most once this often per source address... */
const UNKNOWN_KEY_WARN_MS = 60_000;
/** ...and for at most this many addresses a window: a flood from many sources is only counted. */
const UNKNOWN_KEY_WARN_SOURCES = 16;

export interface WireDeps {
  readonly config: MemberlistConfig;
  readonly clock: Clock;
  readonly transport: Transport;
  readonly keyring: Keyring;
  readonly counters: GossipCounters;
  readonly logger: GossipLogger;
  /** Encoded broadcasts for a packet to `to`, filling `budget` bytes, each costing its length plus `overhead`. */
  readonly piggyback: (to: Addr, overhead: number, budget: number) => Uint8Array[];
}

export interface Request {
  readonly from: Addr;
  readonly sender: string;
  readonly message: Message;
}

export class Wire {
  private readonly header: Uint8Array;
  /** Packets and streams each decode under their own frame bound. */
  private readonly decoders: Record<"packet" | "stream", EnvelopeDecoder>;
  /** When GOSSIP_FRAME_UNKNOWN_KEY was last logged, by source host (at most UNKNOWN_KEY_WARN_SOURCES). */
  private readonly unknownKeyWarned = new Map<string, number>();

  constructor(private readonly deps: WireDeps) {
    this.header = envelopeHeader(deps.config.name);
    const decoder = (maxFrameBytes: number) =>
      new EnvelopeDecoder({
        maxProtocol: deps.config.protocolVersion,
        maxMetaBytes: deps.config.maxMetaBytes,
        maxFrameBytes,
      });
    this.decoders = { packet: decoder(deps.config.maxPacketBytes), stream: decoder(deps.config.maxStreamBytes) };
  }

  /** Plaintext bytes one packet can carry after the envelope header. */
  packetBudget(): number {
    return this.deps.config.maxPacketBytes - FRAME_OVERHEAD - this.header.length;
  }

  /**
   * Sends messages in one packet, filling the rest with broadcasts when `piggyback`. Returns false
   * (and sends nothing) when there was nothing to send.
   */
  send(to: Addr, messages: readonly Message[], piggyback = true): boolean {
    const encoded = messages.map(encodeMessage);
    let budget = this.packetBudget();
    for (const m of encoded) budget -= framedSize(m.length);
    if (budget < 0)
      throw new WeftError(
        "GOSSIP_MESSAGE_TOO_BIG",
        `a packet holds ${this.packetBudget()} bytes of messages; send large data with sendReliable`,
      );
    if (piggyback) encoded.push(...this.deps.piggyback(to, BROADCAST_OVERHEAD, budget));
    if (encoded.length === 0) return false;
    const frame = this.deps.keyring.seal(buildEnvelope(this.header, encoded), "packet");
    const { counters } = this.deps;
    for (const m of encoded) count(counters.sent, m);
    counters.frames.packetsSent++;
    counters.frames.packetBytesSent += frame.length;
    this.deps.transport.sendPacket(to, frame);
    return true;
  }

  /** One stream exchange: a single message out, a single message back. Rejects on failure. */
  async request(to: Addr, message: Message, timeoutMs: number): Promise<Request> {
    const { counters, config } = this.deps;
    const encoded = encodeMessage(message);
    const frame = this.deps.keyring.seal(buildEnvelope(this.header, [encoded]), "request");
    if (frame.length > config.maxStreamBytes) {
      throw new WeftError(
        "GOSSIP_STATE_TOO_BIG",
        `${frame.length} bytes exceed maxStreamBytes ${config.maxStreamBytes}; raise it or shrink node meta`,
      );
    }
    count(counters.sent, encoded);
    counters.frames.streamsSent++;
    counters.frames.streamBytesSent += frame.length;
    let reply: Uint8Array;
    try {
      reply = await this.deps.transport.exchange(to, frame, timeoutMs);
    } catch (err) {
      counters.frames.streamFailures++;
      throw err;
    }
    const envelope = this.accept(reply, "response", to);
    if (!envelope)
      throw new WeftError(
        "GOSSIP_BAD_RESPONSE",
        `refused the reply from ${to.host}:${to.port} (see dropped counters); check both nodes share a key`,
      );
    return { from: to, sender: envelope.sender, message: envelope.messages[0].message };
  }

  onPacket(handler: (from: Addr, envelope: Envelope) => void): void {
    this.deps.transport.onPacket((from, frame) => {
      const envelope = this.accept(frame, "packet", from);
      if (envelope) contain(this.deps.counters, this.deps.logger, "packet handler", () => handler(from, envelope));
    });
  }

  /** Answers stream exchanges; a refused request gets no reply (the transport closes the stream). */
  onRequest(handler: (request: Request) => Promise<Message>): void {
    this.deps.transport.onExchange(async (from, frame) => {
      const envelope = this.accept(frame, "request", from);
      if (!envelope)
        throw new WeftError("GOSSIP_FRAME_REFUSED", "request refused and counted; the sender may use another key");
      const reply = encodeMessage(
        await handler({ from, sender: envelope.sender, message: envelope.messages[0].message }),
      );
      const out = this.deps.keyring.seal(buildEnvelope(this.header, [reply]), "response");
      count(this.deps.counters.sent, reply);
      this.deps.counters.frames.streamsSent++;
      this.deps.counters.frames.streamBytesSent += out.length;
      return out;
    });
  }

  /** Size check, decryption, decoding and counting; undefined (counted) for anything refused. */
  private accept(frame: Uint8Array, kind: FrameKind, from: Addr): Envelope | undefined {
    const { counters, config, keyring } = this.deps;
    const isPacket = kind === "packet";
    if (isPacket) {
      counters.frames.packetsReceived++;
      counters.frames.packetBytesReceived += frame.length;
    } else {
      counters.frames.streamsReceived++;
      counters.frames.streamBytesReceived += frame.length;
    }
    if (frame.length > (isPacket ? config.maxPacketBytes : config.maxStreamBytes)) {
      counters.dropped.tooBig++;
      return undefined;
    }
    const opened = keyring.open(frame, kind);
    if (!opened.ok) {
      counters.dropped[opened.reason]++;
      if (opened.reason === "badKey") this.warnUnknownKey(from, frame);
      return undefined;
    }
    const envelope = this.decoders[isPacket ? "packet" : "stream"].decode(opened.plaintext);
    // A stream frame carries exactly one message.
    if (!envelope || (!isPacket && envelope.messages.length !== 1)) {
      counters.dropped.garbage++;
      return undefined;
    }
    for (const m of envelope.messages) {
      const c = counters.received[m.message.kind];
      c.messages++;
      c.bytes += m.bytes;
    }
    return envelope;
  }

  /**
   * A node that missed a rotation step seals under a key id this node does not hold: without a
   * log line saying so, the cluster only flaps. The key id is a hash prefix, safe to show.
   */
  private warnUnknownKey(from: Addr, frame: Uint8Array): void {
    const now = this.deps.clock.now();
    const warned = this.unknownKeyWarned;
    const last = warned.get(from.host);
    if (last !== undefined && now - last < UNKNOWN_KEY_WARN_MS) return;
    if (last === undefined && warned.size >= UNKNOWN_KEY_WARN_SOURCES) {
      for (const [host, at] of warned) if (now - at >= UNKNOWN_KEY_WARN_MS) warned.delete(host);
      if (warned.size >= UNKNOWN_KEY_WARN_SOURCES) return;
    }
    warned.set(from.host, now);
    const at = formatHostPort(from.host, from.port);
    const keyId = frameKeyId(frame);
    const held = this.deps.keyring.ids().installed;
    this.deps.logger.warn(
      { code: "GOSSIP_FRAME_UNKNOWN_KEY", from: at, keyId, held },
      `dropped a frame from ${at} sealed under key id ${keyId}, which this node does not hold (it holds ${held.join(", ")}): that node runs with another key file (a missed rotation step, or another cluster's); give it this cluster's keys (edit its key file, then SIGHUP), or give this node the missing key if that one is right. Logged at most once a minute per address; weft_gossip_dropped_total{reason="badKey"} counts every such frame`,
    );
  }
}

function count(table: GossipCounters["sent"], encoded: Uint8Array): void {
  const kind = kindOfEncoded(encoded);
  if (!kind) return;
  table[kind].messages++;
  table[kind].bytes += encoded.length;
}
