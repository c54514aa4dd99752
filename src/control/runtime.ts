// What the control plane needs from the outside world, behind interfaces so that the deterministic
// simulator (test/control/sim) can drive the same code with a virtual clock and an in-memory
// network, and the agent can drive it with real timers and sockets.

/** Time source and timers. Real: a monotonic clock aligned with the wall clock when the process
 *  starts (performance.timeOrigin + performance.now()), Date.now for wallNow, and setTimeout.
 *  Simulated: a virtual clock advanced by the harness (both readings the same). */
export interface Clock {
  /** Milliseconds since the Unix epoch (wall-clock aligned when the process starts), never going
   *  backwards: a wall-clock step since the start (NTP) does not move it, so it drifts from wall
   *  time by the steps. Membership derives a restarted node's first incarnation from it. */
  now(): number;
  /** The wall clock (may jump): for times shown to people or kept across restarts; convert a
   *  now() time t with wallNow() + (t - now()). */
  wallNow(): number;
  /** Calls fn after ms; returns a handle for cancel. */
  setTimer(ms: number, fn: () => void): TimerHandle;
  cancel(handle: TimerHandle): void;
}

export type TimerHandle = { readonly id: number };

/** A peer's transport address. */
export interface Addr {
  readonly host: string;
  readonly port: number;
}

/**
 * Packet and stream transport for gossip. Real: UDP datagrams and TCP streams. Simulated: an
 * in-memory network with delay, loss, duplication, reordering and partitions.
 * Payloads handed to and from the transport are already encrypted frames; the transport never
 * looks inside.
 */
export interface Transport {
  readonly local: Addr;
  /** Best effort, unordered, may be lost (UDP). */
  sendPacket(to: Addr, frame: Uint8Array): void;
  /** Reliable request/response exchange (TCP): used for join and push-pull state sync and for
   *  direct lease transfers. Rejects on timeout or connection failure. */
  exchange(to: Addr, frame: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  onPacket(handler: (from: Addr, frame: Uint8Array) => void): void;
  /** Handler answers a reliable exchange. */
  onExchange(handler: (from: Addr, frame: Uint8Array) => Promise<Uint8Array>): void;
  close(): Promise<void>;
  /** What it refused or failed at, by name (e.g. rejectedConnections), for /metrics. */
  readonly stats?: Readonly<Record<string, number>>;
}

/** Seedable randomness, so that a failing simulation replays exactly. */
export interface Random {
  /** Uniform in [0, 1). */
  next(): number;
}
