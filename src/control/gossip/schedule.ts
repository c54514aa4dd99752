// Which member a node probes in each probe slot (slot = floor(now / probeInterval)).
//
// Every node orders the live members (itself included) the same way, by a hash of the name, and
// in slot s probes the member 1 + (s mod (L − 1)) places after itself on that ring of L members.
// With equal views and clocks this is a permutation: in every slot each member is probed by
// exactly one other member, and each node still visits every member once per L − 1 slots (SWIM's
// round robin). Random round-robin probing, as memberlist does it, leaves the wait from a crash
// to its first probe exponential (1,000 nodes, 1 s interval: mean 1 s, but the slowest of 10
// crashes waits about 3 s); here it is at most one interval. Views that differ (during a join
// wave) or skewed clocks only make some slots probe a member twice and another not at all, as
// random probing does all the time.

interface Position {
  readonly hash: number;
  readonly name: string;
}

/** FNV-1a over the name's UTF-16 code units: cheap, stable across nodes and runs. */
function hashName(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

function before(a: Position, b: Position): boolean {
  return a.hash < b.hash || (a.hash === b.hash && a.name < b.name);
}

export class ProbeRing {
  private readonly ring: Position[] = [];

  size(): number {
    return this.ring.length;
  }

  add(name: string): void {
    const p = { hash: hashName(name), name };
    const at = this.lowerBound(p);
    if (this.ring[at]?.name === name) return;
    this.ring.splice(at, 0, p);
  }

  remove(name: string): void {
    const at = this.lowerBound({ hash: hashName(name), name });
    if (this.ring[at]?.name === name) this.ring.splice(at, 1);
  }

  /** The member `self` probes in `slot` (undefined: self is not on the ring, or alone on it). */
  target(self: string, slot: number): string | undefined {
    const n = this.ring.length;
    const at = this.lowerBound({ hash: hashName(self), name: self });
    if (n < 2 || this.ring[at]?.name !== self) return undefined;
    const offset = 1 + (((slot % (n - 1)) + (n - 1)) % (n - 1));
    return this.ring[(at + offset) % n].name;
  }

  private lowerBound(p: Position): number {
    let lo = 0;
    let hi = this.ring.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (before(this.ring[mid], p)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
