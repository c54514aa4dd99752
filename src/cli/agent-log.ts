// The agent's log on stdout. While it runs, lines are written through libuv's thread pool, so a
// stdout nobody reads (journald stuck, a pipe left unread) holds one pool thread and a bounded
// buffer, never the event loop (gossip, health probes). Once a stop begins they are written by the
// main thread: hanging file-system calls, which are what make a stop hang, can hold every pool
// thread, and a second SIGINT's kill dropped what was still queued behind them.
import sonicBoom from "sonic-boom";

/** Bytes of lines kept for a stdout that takes none; later lines are dropped until it takes some. */
const BUFFERED_BYTES = 1 << 20;

/**
 * EAGAIN retries (sonic-boom sleeps 100 ms before each) that the main thread's writes may wait
 * through in all, for a non-blocking stdout nobody reads: past them its lines are given up.
 */
export const SYNC_EAGAIN_RETRIES = 20;

/**
 * sonic-boom's retryEAGAIN for writes by the main thread: true `budget` times in all, then false.
 * Its sync writes sleep and nest a call deeper at each retry, so an unbounded retry blocked the
 * event loop for good and overflowed the stack after minutes.
 */
export function boundedRetry(budget: number): () => boolean {
  let left = budget;
  return () => left-- > 0;
}

/** pino's destination for the agent: asynchronous until `toSync`. */
export class AgentLogStream {
  private syncRetry: (() => boolean) | undefined;
  private sync: sonicBoom.SonicBoom | undefined;
  private readonly async: sonicBoom.SonicBoom;
  /**
   * An error other than EAGAIN met: no more lines are written or flushed (sonic-boom's flushSync
   * retries such an error without end). EPIPE, the reader gone, is quiet, as with pino before.
   */
  private failed = false;

  // sonic-boom itself, not pino.destination: that one adds pino's own exit hook, which flushed
  // before `toSync` made the retries bounded, and so retried EAGAIN for good inside 'exit'.
  constructor(private readonly fd: number) {
    this.async = new sonicBoom.SonicBoom({
      fd,
      maxLength: BUFFERED_BYTES,
      // Through the pool a retry is a timer (no nesting, no blocking): retried until stdout takes
      // the line; once stopping, it counts against the main thread's retries.
      retryEAGAIN: () => this.syncRetry?.() ?? true,
    });
    this.async.on("error", this.onError);
  }

  /** EAGAIN once the retries are spent leaves the lines buffered (and later ones dropped); EPIPE drops them and the agent runs on; any other error ends the agent, as before. */
  private readonly onError = (err: NodeJS.ErrnoException): void => {
    if (err.code === "EAGAIN" || err.code === "EBUSY") return;
    this.failed = true;
    if (err.code !== "EPIPE") throw err;
  };

  write(line: string): void {
    if (!this.failed) (this.sync ?? this.async).write(line);
  }

  /**
   * From here on each line is written before `write` returns, after what the pool still held
   * (a line it was writing then may come later). Called again, it retries what is still buffered.
   * Bounded and never throwing, it is also the exit hook: a throw in 'exit' skips the hooks after it.
   */
  toSync(): void {
    if (!this.sync) {
      this.syncRetry = boundedRetry(SYNC_EAGAIN_RETRIES);
      this.sync = new sonicBoom.SonicBoom({
        fd: this.fd,
        sync: true,
        maxLength: BUFFERED_BYTES,
        retryEAGAIN: this.syncRetry,
      });
      this.sync.on("error", this.onError);
    }
    for (const b of [this.async, this.sync]) {
      if (this.failed) return;
      try {
        b.flushSync();
      } catch (err) {
        this.onError(err as NodeJS.ErrnoException);
      }
    }
  }
}
