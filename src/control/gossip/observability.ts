// What the membership layer reports: a logger (pino's interface) and plain counters, which the
// agent's /metrics reads as they are (weft_gossip_*).
import type { Logger } from "pino";
import { MESSAGE_KINDS, type MessageKind } from "./messages.js";

export type GossipLogger = Pick<Logger, "debug" | "info" | "warn" | "error">;

export interface TrafficCount {
  messages: number;
  /** Encoded message bytes (before the envelope and encryption). */
  bytes: number;
}

/** Why an incoming frame or message was dropped. None of them changes state. */
export type DropReason =
  /** Sealed under a key id this node does not hold (another cluster, or a removed key). */
  | "badKey"
  /** Authentication failed: tampered, or a forged key id. */
  | "badTag"
  /** Shorter than the frame header and tag. */
  | "badLength"
  /** Over maxPacketBytes / maxStreamBytes. */
  | "tooBig"
  /** Authentic but not a well-formed envelope (or an unknown frame version). */
  | "garbage"
  /** A ping meant for another node name at this address (the address was reused). */
  | "misdirected"
  /** A well-formed message on the wrong channel (e.g. push-pull in a UDP packet). */
  | "unexpected"
  /** A request (ping, indirect ping, pull) after the first in one packet: no agent sends two, and
   *  each is answered with packets of its own (a member with the key could have one packet of
   *  indirect pings send dozens of full packets to any address). */
  | "extraRequest";

export interface GossipCounters {
  sent: Record<MessageKind, TrafficCount>;
  received: Record<MessageKind, TrafficCount>;
  /** Whole frames as handed to / taken from the transport, encryption included. "streams" count
   *  stream frames: requests and replies alike. streamFailures: our requests that got no reply. */
  frames: {
    packetsSent: number;
    packetBytesSent: number;
    packetsReceived: number;
    packetBytesReceived: number;
    streamsSent: number;
    streamBytesSent: number;
    streamsReceived: number;
    streamBytesReceived: number;
    streamFailures: number;
  };
  dropped: Record<DropReason, number>;
  protocol: {
    probes: number;
    probeFailures: number;
    /** Last probes before declaring a member dead (see FailureDetector.confirm). */
    lastChecks: number;
    /** ...of which the member answered, so it was not declared dead. */
    lastChecksAnswered: number;
    tcpFallbackAcks: number;
    /** This node's failure detector suspected a member. */
    suspicionsRaised: number;
    /** A suspicion held here ran out and this node declared the member dead. */
    deathsDeclared: number;
    /** This node was suspected or declared dead and answered with a higher incarnation. */
    refutations: number;
    /** An alive message named a live member at another address; refused. */
    nameConflicts: number;
    /** A delegate or handler threw; logged and contained. */
    handlerErrors: number;
    /** Live records that pull replies brought (pull.ts)... */
    pulledRecords: number;
    /** ...of which this node already held that incarnation or a newer one (the replies' waste). */
    pulledKnown: number;
  };
}

const DROP_REASONS: readonly DropReason[] = [
  "badKey",
  "badTag",
  "badLength",
  "tooBig",
  "garbage",
  "misdirected",
  "unexpected",
  "extraRequest",
];

function perKind(): Record<MessageKind, TrafficCount> {
  return Object.fromEntries(MESSAGE_KINDS.map((k) => [k, { messages: 0, bytes: 0 }])) as Record<
    MessageKind,
    TrafficCount
  >;
}

export function newCounters(): GossipCounters {
  return {
    sent: perKind(),
    received: perKind(),
    frames: {
      packetsSent: 0,
      packetBytesSent: 0,
      packetsReceived: 0,
      packetBytesReceived: 0,
      streamsSent: 0,
      streamBytesSent: 0,
      streamsReceived: 0,
      streamBytesReceived: 0,
      streamFailures: 0,
    },
    dropped: Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>,
    protocol: {
      probes: 0,
      probeFailures: 0,
      lastChecks: 0,
      lastChecksAnswered: 0,
      tcpFallbackAcks: 0,
      suspicionsRaised: 0,
      deathsDeclared: 0,
      refutations: 0,
      nameConflicts: 0,
      handlerErrors: 0,
      pulledRecords: 0,
      pulledKnown: 0,
    },
  };
}

/**
 * Runs a handler or a delegate call of the layer above; if it throws, the error is counted and
 * logged instead of escaping into the receive loop or leaving a state update half done.
 */
export function contain(counters: GossipCounters, logger: GossipLogger, what: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    counters.protocol.handlerErrors++;
    logger.error({ err, in: what }, "handler threw; contained, membership state is unaffected");
  }
}
