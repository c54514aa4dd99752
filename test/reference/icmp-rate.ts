// Reference of the send path's ICMP error rate limit (assembly/packet/icmp-rate.ts): a token
// bucket refilled by `perSec` tokens a second of the worker's ms clock, holding at most `burst`.
import type { SendResult } from "./packets.js";

export class RefIcmpBucket {
  private tokens: number;
  private stamp = 0;

  constructor(
    private readonly perSec = 1000,
    private readonly burst = 50,
  ) {
    this.tokens = burst;
  }

  /** Whether an error may be sent at `now` (ms, u32): takes a token if so. */
  take(now: number): boolean {
    // u32 arithmetic as the Wasm's: a clock that went back reads as a long time.
    const elapsed = Math.min((now - this.stamp) >>> 0, 1000);
    const gained = Math.floor((elapsed * this.perSec) / 1000);
    if (gained > 0) {
      this.tokens = Math.min(this.tokens + gained, this.burst);
      this.stamp = now >>> 0;
    }
    if (this.tokens === 0) return false;
    this.tokens--;
    return true;
  }

  /** A batch's results at `now`, in packet order: replies without a token become drops. */
  limit<T extends Pick<SendResult, "verdict">>(results: T[], now: number): Array<T | { verdict: string }> {
    return results.map((r) => (r.verdict !== "REPLY" || this.take(now) ? r : { verdict: "ICMP_RATE_LIMITED" }));
  }
}
