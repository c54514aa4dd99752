// Keeps the backend's peers equal to what the control plane says: on every membership or lease
// change (coalesced), and from the periodic reconcile. Removals come first: a subnet that moved
// from a gone peer to another (a reclaim) must be free before its new owner is set, or the backend
// refuses the new owner as an overlap. Every peer holding a subnet that a removal or another
// peer's move freed is set again once all the changes are in (it may have been refused beside the
// subnet's previous holder, in this sync or before). A peer that changed address is an update,
// set in place, so it never loses its route in between. While there is no backend (in
// the middle of a swap) a sync only tells `holding` the peers: the new backend gets every peer when
// it starts. A peer's run (another process of the node, ControlPlane) is part of what it is set to.
// A failed sync fails only the kicks waiting for it; the next kick runs again and sets every
// peer afresh, since what the backend holds is unknown after a failure.
import type { Backend, BackendPeer } from "../backends/backend.js";
import { formatAnyPrefix as formatPrefix } from "../net/ip.js";
import type { Logger } from "pino";
import { SerialQueue } from "../util/serial.js";

export class PeerSync {
  /** What each peer was last set to (key "" once a failed sync left it unknown), and its subnet. */
  private current = new Map<string, { key: string; subnet: string }>();
  private readonly syncs = new SerialQueue();
  /** The sync queued but not started yet, which later kicks join. */
  private next?: Promise<void>;

  /**
   * `peers` says what the backend should hold: the control plane's peers of the backend's family.
   * `holding`, if given, is told each sync's peers by name, before the others are removed, and
   * while there is no backend too.
   */
  constructor(
    private readonly peers: () => BackendPeer[],
    private readonly backend: () => Backend | undefined,
    private readonly log: Logger,
    private readonly holding?: (peers: ReadonlyMap<string, BackendPeer>) => void,
  ) {}

  /** Schedules a sync; several calls while one runs collapse into one more. */
  kick(): Promise<void> {
    this.next ??= this.syncs.run(() => {
      this.next = undefined;
      return this.sync();
    });
    return this.next;
  }

  /** Forgets what was programmed (after a backend swap every peer must be set again). */
  reset(): void {
    this.current.clear();
  }

  get size(): number {
    return this.current.size;
  }

  private async sync(): Promise<void> {
    const want = new Map<string, BackendPeer>(this.peers().map((p) => [p.name, p]));
    // Told with no backend too (a lane down, waiting for a lease or a restart): a peer gone
    // meanwhile is forgotten then, before a node can take its name.
    this.holding?.(want);
    const backend = this.backend();
    if (!backend) return;
    try {
      await this.apply(backend, want);
    } catch (err) {
      for (const c of this.current.values()) c.key = ""; // set again, removed still when gone
      throw err;
    }
  }

  private async apply(backend: Backend, want: ReadonlyMap<string, BackendPeer>): Promise<void> {
    const key = (p: BackendPeer) => JSON.stringify([formatPrefix(p.subnet), String(p.underlay), p.backend, p.run]);
    const gone = [...this.current.keys()].filter((name) => !want.has(name));
    // Subnets a removal or a peer's move frees: a peer holding one now is set again.
    const freed = new Set<string>();
    for (const [name, p] of want) {
      const was = this.current.get(name)?.subnet;
      if (was !== undefined && was !== formatPrefix(p.subnet)) freed.add(was);
    }
    for (const name of gone) {
      this.log.info({ peer: name }, "peer removed");
      freed.add(this.current.get(name)!.subnet);
      this.current.delete(name);
    }
    // Issued together, so that a kernel backend programs them in one batch; so are the sets.
    await Promise.all(gone.map((name) => backend.removePeer(name)));
    const changes: Promise<void>[] = [];
    for (const [name, p] of want) {
      const subnet = formatPrefix(p.subnet);
      if (this.current.get(name)?.key === key(p)) continue;
      this.log.info(
        { peer: name, subnet, backend: p.backend.type },
        this.current.has(name) ? "peer changed" : "peer added",
      );
      this.current.set(name, { key: key(p), subnet });
      changes.push(backend.setPeer(p));
    }
    await Promise.all(changes);
    // Once every move is in: a set above may have met a freed subnet's previous holder still there
    // (moves in a chain or a swap), and a peer refused before beside a stale holder is set again.
    await Promise.all(
      [...want.values()].filter((p) => freed.has(formatPrefix(p.subnet))).map((p) => backend.setPeer(p)),
    );
  }
}
