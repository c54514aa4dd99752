// Keeps the backend's peers equal to what the control plane says: on every membership or lease
// change (coalesced), and from the periodic reconcile. Adds and updates come before removals, so
// a peer that changed address never loses its route in between. While there is no backend (in
// the middle of a swap) a sync does nothing: the new backend gets every peer when it starts.
// A failed sync fails only the kicks waiting for it; the next kick runs again and sets every
// peer afresh, since what the backend holds is unknown after a failure.
import type { Backend, BackendPeer } from "../backends/backend.js";
import { formatAnyPrefix as formatPrefix } from "../net/ip.js";
import type { Logger } from "pino";
import { SerialQueue } from "../util/serial.js";

export class PeerSync {
  private current = new Map<string, string>();
  private readonly syncs = new SerialQueue();
  /** The sync queued but not started yet, which later kicks join. */
  private next?: Promise<void>;

  /** `peers` says what the backend should hold: the control plane's peers of the backend's family. */
  constructor(
    private readonly peers: () => BackendPeer[],
    private readonly backend: () => Backend | undefined,
    private readonly log: Logger,
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
    const backend = this.backend();
    if (!backend) return;
    try {
      await this.apply(backend);
    } catch (err) {
      for (const name of this.current.keys()) this.current.set(name, ""); // set again, removed still when gone
      throw err;
    }
  }

  private async apply(backend: Backend): Promise<void> {
    const want = new Map<string, BackendPeer>(this.peers().map((p) => [p.name, p]));
    const key = (p: BackendPeer) => JSON.stringify([formatPrefix(p.subnet), String(p.underlay), p.backend]);
    const changes: Promise<void>[] = [];
    for (const [name, p] of want) {
      if (this.current.get(name) === key(p)) continue;
      this.log.info(
        { peer: name, subnet: formatPrefix(p.subnet), backend: p.backend.type },
        this.current.has(name) ? "peer changed" : "peer added",
      );
      this.current.set(name, key(p));
      changes.push(backend.setPeer(p));
    }
    // Issued together, so that a kernel backend programs them in one batch.
    await Promise.all(changes);
    const gone = [...this.current.keys()].filter((name) => !want.has(name));
    for (const name of gone) {
      this.log.info({ peer: name }, "peer removed");
      this.current.delete(name);
    }
    await Promise.all(gone.map((name) => backend.removePeer(name)));
  }
}
