// Join waves: whether this node is in one, and how often another member's "alive" is pushed
// while it is. A wave is many changes in a short time (hundreds of joins a second at 1,000 nodes):
// then a full push of every "alive" (RetransmitMult × log N sends by every member) is most of
// the traffic, so it is cut short and delta pulls (pull.ts) find what the short push missed. A
// lone change is not a wave: it keeps the full push and costs nothing more.
import type { Clock } from "../runtime.js";

/** Sends of another member's "alive" in a wave: ceil(mult × ceil(log10(N + 1))), at least 1. */
export function waveRetransmitLimit(waveRetransmitMult: number, liveCount: number): number {
  return Math.max(1, Math.ceil(waveRetransmitMult * Math.ceil(Math.log10(liveCount + 1))));
}

/**
 * In a wave while the last `changes` record changes all fell within `windowMs`. Only those
 * times are kept (a ring), so noting a change and asking are O(1) whatever the wave's size.
 */
export class WaveMeter {
  private readonly times: number[];
  private next = 0;

  constructor(
    private readonly clock: Clock,
    private readonly windowMs: number,
    changes: number,
  ) {
    this.times = new Array<number>(changes).fill(-Infinity);
  }

  /** This node took a change to a record. */
  note(): void {
    this.times[this.next] = this.clock.now();
    this.next = (this.next + 1) % this.times.length;
  }

  /** Some change within the window. Members in a wave push short and leave gaps, so a node
   *  that takes news pulls even if it has seen too little of the wave to call it one (with
   *  gossipOncePerRound a member reached by few joins stayed without 10 of 23 for good). */
  newsFlowing(): boolean {
    const last = this.times[(this.next + this.times.length - 1) % this.times.length];
    return this.clock.now() - last <= this.windowMs;
  }

  inWave(): boolean {
    // times[next] is the oldest of the last `changes` changes.
    return this.clock.now() - this.times[this.next] <= this.windowMs;
  }
}
