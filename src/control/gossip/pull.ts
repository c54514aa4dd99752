// Delta pulls: the pull half of push-pull rumour spreading (Karp et al.), for join waves. While
// news flows to this node (a record change within pullWindowMs, wave.ts), every pullIntervalMs it sends one random live member a
// "pull" packet: a digest (digest.ts) of the records it took in the last pullWindowMs + 2 pull
// intervals. The member answers in up to 3 packets with the live records it took as news in the
// last pullWindowMs that the digest lacks, oldest first (an empty reply if none; news only: what
// a member took from a peer's full state at its join would crowd out what the puller lacks; a
// joiner's pull, whose digest holds all it knows, gets every record it lacks). So the short push of a wave reaches most
// members, and each pull round squares the share still missing a record, at the cost of a digest
// (some 10 bits a record) and the records actually missing. Without news nothing is sent.
// Mixed versions: an agent that predates pulls refuses the frame (counted as garbage) and answers
// nothing, and it never pulls, so it would miss what the short push does not bring it. So this
// node pushes short only while most of its recent pulls were answered (answering()); among older
// agents, it pushes in full as they do.
import type { Clock, Random } from "../runtime.js";
import type { MemberlistConfig } from "./config.js";
import { buildDigest, digestHas } from "./digest.js";
import { nodeStateSize, type Message, type NodeState } from "./messages.js";
import type { Wire } from "./net.js";
import { nodeState, type Membership, type MemberEntry } from "./state.js";
import type { WaveMeter } from "./wave.js";

type Pull = Extract<Message, { kind: "pull" }>;

/** The longest window a pull may ask for: bounds the work one packet can cause. */
const MAX_PULL_WINDOW_MS = 60_000;
/** Packets one pull may be answered with (a member that missed much catches up over rounds). */
const MAX_REPLY_PACKETS = 3;
/** A pull reply's message around its records: fixarray, kind code, array header (≤ 65535). */
const REPLY_OVERHEAD = 5;

export interface DeltaPullDeps {
  readonly config: MemberlistConfig;
  readonly clock: Clock;
  readonly random: Random;
  readonly membership: Membership;
  readonly wire: Wire;
  readonly wave: WaveMeter;
}

/** Recent pulls remembered, and how many of them must have been answered for a short push. */
const RECENT_PULLS = 8;
const ANSWERED_FOR_SHORT_PUSH = 6;

export class DeltaPull {
  /** Whether each of the last RECENT_PULLS pulls was answered (a ring; optimistic at first). */
  private readonly recent = new Array<boolean>(RECENT_PULLS).fill(true);
  private next = 0;
  /** The member asked last, until it answers or the next round counts it as silent. */
  private awaiting?: string;
  /** When this node took its seed's full state (joined), if it did. */
  private joinedAt = -Infinity;

  constructor(private readonly deps: DeltaPullDeps) {}

  /** Whether members answer this node's pulls (pulls on, and most recent ones answered; loss
   *  costs a few): only then may this node cut its push short in a wave (see the module comment). */
  answering(): boolean {
    if (this.deps.config.pullIntervalMs === 0) return false;
    return this.recent.filter(Boolean).length >= ANSWERED_FOR_SHORT_PUSH;
  }

  /** This node took a seed's full state (its join): see windowMs. */
  joined(): void {
    this.joinedAt = this.deps.clock.now();
  }

  /**
   * The window a pull asks for: pullWindowMs, and in the pullWindowMs after this node's join,
   * also what members took as news since pullWindowMs before the join. A record the seed lacked
   * when it sent its full state (news of the last second or two) is otherwise asked for only while
   * it is news at the members; answers offer news only, so once it aged out of their windows
   * nobody offered it, and the joiner waited for anti-entropy (ARCHITECTURE.md, "Pull answers:
   * news only"). The digest covers the same span: the joiner took every record at its join.
   */
  private windowMs(): number {
    const { config, clock } = this.deps;
    const sinceJoin = clock.now() - this.joinedAt;
    return sinceJoin <= config.pullWindowMs ? config.pullWindowMs + Math.ceil(sinceJoin) : config.pullWindowMs;
  }

  /** One pull round (every pullIntervalMs): only while news flows (wave.ts), to one random live member. */
  tick(): void {
    const { config, membership, random, wave, wire } = this.deps;
    if (this.awaiting !== undefined) this.record(false);
    if (!wave.newsFlowing()) return;
    const [peer] = membership.randomNodes(1, (r) => r.state === "alive" && r.name !== config.name);
    if (!peer) return;
    this.awaiting = peer.name;
    // The digest covers a little more than the window asked for: a record the member took lately
    // may have reached us a little earlier.
    const windowMs = this.windowMs();
    const held = membership.changedWithin(windowMs + 2 * config.pullIntervalMs);
    const salt = Math.floor(random.next() * 0x1_0000_0000);
    const digest = buildDigest(salt, held, held.length);
    // Not piggybacked: an agent without pulls drops the whole frame, broadcasts included.
    wire.send({ host: peer.host, port: peer.port }, [{ kind: "pull", salt, windowMs, digest }], false);
  }

  /** A pull reply from `sender` arrived (its records are merged by the caller). */
  answered(sender: string): void {
    if (sender === this.awaiting) this.record(true);
  }

  /**
   * Answers a pull from `sender` (see the module comment), empty if nothing is missing. The reply
   * goes to the address the sender's record holds, never to the packet's source: a replayed pull
   * with a forged source must not turn a small packet into a large one at a stranger's address.
   */
  answer(sender: string, m: Pull): void {
    const { clock, membership, wire } = this.deps;
    const to = membership.get(sender);
    if (to?.state !== "alive") return;
    // Oldest first: those leave the window soonest, and a record that ages out of every member's
    // window unpulled waits for anti-entropy (minutes at 1,000 nodes). Newer ones come next round.
    const news = membership.newsWithin(Math.min(m.windowMs, MAX_PULL_WINDOW_MS));
    // A joiner's pull (its window reaches back past pullWindowMs, see windowMs) has a digest of
    // every record it holds: it took them all at its join. So what is missing from that digest is
    // missing at the joiner, news or not, and the rest follows the news: a member its seed lacked
    // (one that joined seconds before it, whose news had not reached the seed) is news nowhere by
    // then, and waited for anti-entropy (ARCHITECTURE.md, "Pull answers: news only").
    const offered = m.windowMs > this.deps.config.pullWindowMs ? news.concat(notIn(news, membership)) : news;
    const missing = offered.filter((r) => r.state === "alive" && r.name !== sender && !digestHas(m.digest, m.salt, r));
    const now = clock.now();
    const addr = { host: to.host, port: to.port };
    // Compact records (protocol version 2) to a member known to speak it.
    const compact = this.deps.config.protocolVersion >= 2 && to.vsn >= 2;
    let next = 0;
    for (let packet = 0; packet < MAX_REPLY_PACKETS && (packet === 0 || next < missing.length); packet++) {
      // The reply's bin header is at most 3 bytes (a packet is far below 64 KiB).
      let budget = wire.packetBudget() - 3 - REPLY_OVERHEAD;
      const nodes: NodeState[] = [];
      for (; next < missing.length; next++) {
        const n = nodeState(missing[next], now);
        budget -= nodeStateSize(n, compact);
        if (budget < 0) break;
        nodes.push(n);
      }
      wire.send(addr, [{ kind: compact ? "pullReply2" : "pullReply", nodes }]);
    }
  }

  private record(answered: boolean): void {
    this.awaiting = undefined;
    this.recent[this.next] = answered;
    this.next = (this.next + 1) % RECENT_PULLS;
  }
}

/** Every record of `membership` but those in `news`. */
function notIn(news: readonly MemberEntry[], membership: Membership): MemberEntry[] {
  const taken = new Set(news);
  return membership.changedWithin(Infinity).filter((r) => !taken.has(r));
}
