// References for the receive queue's CoDel (src/dataplane/codel.ts): its decisions spelled out over
// the whole history of reads, and a socket receive queue with arrival timestamps and head drop as
// the addon's udpRecv applies them, on a virtual clock.

/** One batch read as CoDel sees it: datagrams kept, datagrams over the target, and when. */
export interface QueueRead {
  kept: number;
  late: number;
  at: number;
}

/**
 * Whether reads drop after each of `reads`, from the history: a read finds the queue above target
 * when it brought late datagrams and either filled the batch (counting the late ones dropped while
 * dropping) or, while dropping, kept nothing. Drops hold after read i when i is above and the run
 * of above reads it ends, starting at j, has lasted an interval (at_i − at_j ≥ interval), or began
 * less than `memory` after the read that ended the previous dropping state.
 */
export function referenceDropping(reads: QueueRead[], batch: number, interval: number, memory: number): boolean[] {
  const dropping: boolean[] = [];
  const above: boolean[] = [];
  for (let i = 0; i < reads.length; i++) {
    const before = i > 0 && dropping[i - 1];
    const { kept, late } = reads[i];
    above[i] = late > 0 && (kept + (before ? late : 0) === batch || (before && kept === 0));
    if (!above[i]) {
      dropping[i] = false;
      continue;
    }
    let j = i;
    while (j > 0 && above[j - 1]) j--;
    let ended = -Infinity;
    for (let k = j - 1; k > 0; k--)
      if (dropping[k - 1] && !above[k]) {
        ended = reads[k].at;
        break;
      }
    dropping[i] = reads[i].at - reads[j].at >= interval || reads[j].at - ended < memory;
  }
  return dropping;
}

/** A socket's receive queue: arrival times in order, tail drop when full (as SO_RCVBUF does). */
export class SimulatedReceiveQueue {
  private arrivals: number[] = [];
  tailDrops = 0;
  headDrops = 0;

  constructor(private readonly capacity: number) {}

  arrive(at: number, count: number): void {
    const room = Math.min(count, this.capacity - this.arrivals.length);
    for (let k = 0; k < room; k++) this.arrivals.push(at);
    this.tailDrops += count - room;
  }

  /**
   * udpRecv: up to `batch` datagrams from the head; `late` those that waited longer than `target`,
   * dropped with `drop`. Returns the ages of the kept ones and the late count.
   */
  read(now: number, batch: number, target: number, drop: boolean): { ages: number[]; late: number } {
    const taken = this.arrivals.splice(0, batch);
    const ages: number[] = [];
    let late = 0;
    for (const at of taken) {
      const stale = now - at > target;
      late += stale ? 1 : 0;
      if (stale && drop) this.headDrops++;
      else ages.push(now - at);
    }
    return { ages, late };
  }
}
