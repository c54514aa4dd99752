// Bootstrap: where a node's ring starts. The saved state if there is one (refused if it belongs to
// another node, network or seed list). A node with a seed list but no complete saved ring does not
// adopt the version-1 seed division at once: it is stale if the cluster already exists (e.g. a
// seed's disk was replaced). It first listens for bootstrapQuietMs; if a peer's full ring arrives
// meanwhile, that is the truth, else (a cold start of the whole cluster) it takes the seed
// division. Any node that lost its state dir relearns its slots, and its subnet, from the ring its
// peers keep.
import { WeftError } from "../../errors.js";
import type { LeaseCore } from "./core.js";
import { Ring } from "./ring.js";
import type { PersistedLeaseState } from "./store.js";

export class SeedBootstrap {
  /** The seed division, held back while a fresh node listens for the cluster's ring. */
  private held: Ring | null = null;

  constructor(
    private readonly core: LeaseCore,
    /** The acquirer's current backoff, for retrying a seed division that could not be saved. */
    private readonly retryDelay: () => number,
  ) {}

  /** While the seed division is held back the ring is incomplete: nobody may judge who is heir. */
  get holdingSeeds(): boolean {
    return this.held !== null;
  }

  /** The ring to start from (the saved one, or an empty one with the seed list) and the saved
   *  state it came from; starts the quiet period if the seed division must wait. */
  async load(): Promise<{ ring: Ring; saved: PersistedLeaseState | null }> {
    const { space, seeds, store, log, bootstrapQuietMs } = this.core.opts;
    const name = this.core.name;
    const saved = await store.load();
    const configured = seeds === undefined ? null : Ring.seeded(space.slotCount, seeds);
    const ring = Ring.unknown(space.slotCount, configured?.seeds ?? null);
    if (saved) {
      if (saved.fingerprint !== space.fingerprint || saved.node !== name) {
        throw new WeftError(
          "LEASE_STATE_MISMATCH",
          `the saved lease state in ${store.location} belongs to node ${saved.node} on "${saved.network}", but this is node ${name} on "${space.describe()}". ` +
            `Changing the network or the node name needs a new state dir (and the old node reclaimed)`,
        );
      }
      const loaded = ring.merge(saved.ring, "the saved ring");
      if (!loaded.ok && loaded.error.code === "LEASE_RING_MISMATCH") {
        throw new WeftError(
          "LEASE_STATE_MISMATCH",
          `cannot use the saved lease state in ${store.location}: ${loaded.error.message}; the seed list must never change`,
        );
      }
      // Parsed, but its ring does not fit this network (a hand edit, or damage the parser cannot see).
      if (!loaded.ok) throw store.corrupt(loaded.error.message);
    }
    if (configured && ring.knownCount() < space.slotCount) {
      this.held = configured;
      log.info(
        { code: "LEASE_BOOTSTRAP", seeds: configured.seeds, waitMs: bootstrapQuietMs },
        `no complete saved ring: listening ${bootstrapQuietMs} ms for the cluster's ring before starting from the seed division`,
      );
      this.core.after(bootstrapQuietMs, () => void this.core.enqueue(() => this.adoptSeedDivision()));
    }
    return { ring, saved };
  }

  /** A peer's complete ring supersedes the held-back seed division. */
  committed(ring: Ring): void {
    if (this.held && ring.knownCount() === ring.slotCount) this.held = null;
  }

  /** Nobody told us the ring within bootstrapQuietMs: a cold start, take the seed division. */
  private async adoptSeedDivision(): Promise<void> {
    if (!this.held) return;
    const next = this.core.ring.clone();
    const merged = next.merge(this.held.state());
    if (!merged.ok) return this.core.refuse(merged.error, merged.conflicts);
    this.core.opts.log.info(
      { code: "LEASE_BOOTSTRAP" },
      "heard no complete ring from any peer: starting from the seed division (cold start)",
    );
    try {
      await this.core.commit(next, []);
    } catch (err) {
      // Kept until saved: a failed save (a full disk) is retried with backoff, not forgotten.
      this.core.after(this.retryDelay(), () => void this.core.enqueue(() => this.adoptSeedDivision()));
      throw err;
    }
    this.held = null;
  }
}
