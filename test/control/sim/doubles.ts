// Test doubles for one component at a time: a lease state store that survives restarts (a state
// dir kept in memory; one that can fill up; one whose saves can be held at a gate), the members'
// addresses a state dir keeps, a logger that records every line,
// and a lone virtual clock (the simulator's Scheduler, through a simulated host's clock).
import type { LeaseStateStore, PersistedLeaseState } from "../../../src/control/lease/store.js";
import { WeftError } from "../../../src/errors.js";
import type { LeaseLogger } from "../../../src/control/lease/types.js";
import type { Addr } from "../../../src/control/runtime.js";
import type { MemberStore } from "../../../src/control/saved-members.js";
import { SimNetwork, type SimClock } from "./network.js";
import { SeededRandom } from "./random.js";
import { Scheduler } from "./scheduler.js";

/** Keeps the last saved state, like a state dir that survives the process. */
export class MemoryStore implements LeaseStateStore {
  saved: PersistedLeaseState | null = null;
  saves = 0;
  readonly location = "the in-memory state dir";
  corrupt(why: string): WeftError {
    return new WeftError("LEASE_STATE_CORRUPT", `${this.location} is damaged (${why})`);
  }
  async load(): Promise<PersistedLeaseState | null> {
    return this.saved;
  }
  async save(state: PersistedLeaseState): Promise<void> {
    this.saved = structuredClone(state);
    this.saves++;
  }
}

/** The members' addresses a state dir keeps (saved-members.ts), in memory. */
export class MemoryMembers implements MemberStore {
  saved: Addr[] = [];
  saves = 0;
  async load(): Promise<Addr[]> {
    return [...this.saved];
  }
  async save(addrs: readonly Addr[]): Promise<void> {
    this.saved = [...addrs];
    this.saves++;
  }
}

/** A state dir that can fill up: "full" fails every save before writing; "torn" writes the new
 *  state but reports a failure, as a failed fsync of the directory after the rename does. */
export class Disk extends MemoryStore {
  fault: "full" | "torn" | null = null;
  failures = 0;

  override async save(state: PersistedLeaseState): Promise<void> {
    if (this.fault === "full") this.fail();
    await super.save(state);
    if (this.fault === "torn") this.fail();
  }

  private fail(): never {
    this.failures++;
    throw new WeftError("LEASE_PERSIST_FAILED", "cannot save lease state: ENOSPC: no space left on device (simulated)");
  }
}

/** A state dir whose saves wait at a gate: lease work queues up behind the one saving. */
export class GatedStore extends MemoryStore {
  gate: Promise<void> = Promise.resolve();
  /** The states waiting at the gate now, oldest first. */
  readonly waiting: PersistedLeaseState[] = [];
  override async save(state: PersistedLeaseState): Promise<void> {
    this.waiting.push(state);
    await this.gate;
    this.waiting.splice(this.waiting.indexOf(state), 1);
    await super.save(state);
  }

  /** Holds every save from now on until the returned function is called. */
  close(): () => void {
    let open: () => void = () => {};
    this.gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    return open;
  }
}

export interface LogLine {
  level: "info" | "warn" | "error";
  obj: Record<string, unknown>;
  msg: string;
}

export class RecordingLog implements LeaseLogger {
  readonly lines: LogLine[] = [];
  info(obj: object, msg: string): void {
    this.lines.push({ level: "info", obj: obj as Record<string, unknown>, msg });
  }
  warn(obj: object, msg: string): void {
    this.lines.push({ level: "warn", obj: obj as Record<string, unknown>, msg });
  }
  error(obj: object, msg: string): void {
    this.lines.push({ level: "error", obj: obj as Record<string, unknown>, msg });
  }
  codes(): string[] {
    return this.lines.map((l) => String(l.obj.code));
  }
}

/** One host's clock on a fresh scheduler: run it with scheduler.runFor / runUntilTrue. */
export function loneClock(): { scheduler: Scheduler; clock: SimClock } {
  const scheduler = new Scheduler();
  const clock = new SimNetwork(scheduler, new SeededRandom(1)).host({ host: "198.18.0.1", port: 7946 }).clock;
  return { scheduler, clock };
}
