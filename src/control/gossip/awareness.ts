// Lifeguard local health awareness (LHA). A node that misses nacks it was promised, or has to
// refute suspicions about itself, is probably the slow one: it raises its score, which stretches
// its own probe interval and timeouts, instead of accusing healthy peers.

export class Awareness {
  private healthScore = 0;

  /** maxMultiplier: timeouts stretch at most this many times (score 0 .. maxMultiplier - 1). */
  constructor(private readonly maxMultiplier: number) {}

  /** Positive after trouble (missed nacks, refutations), -1 after a clean probe. */
  applyDelta(delta: number): void {
    this.healthScore = Math.min(this.maxMultiplier - 1, Math.max(0, this.healthScore + delta));
  }

  score(): number {
    return this.healthScore;
  }

  /** A timeout or interval stretched by the current score: ms × (score + 1). */
  scale(ms: number): number {
    return ms * (this.healthScore + 1);
  }
}
