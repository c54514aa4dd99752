// The agent's log on stdout. While it runs, lines are written through libuv's thread pool, so a
// stdout nobody reads (journald stuck, a pipe left unread) holds one pool thread and a bounded
// buffer, never the event loop (gossip, health probes). Once a stop begins they are written by the
// main thread: hanging file-system calls, which are what make a stop hang, can hold every pool
// thread, and a second SIGINT's kill dropped what was still queued behind them.
// Our own writer, not sonic-boom: its flushSync retried an error other than EAGAIN (EPIPE, the
// reader gone) without end, so a stop beginning with lines queued for a closed pipe hung there.
import { write as writeAsync, writeSync } from "node:fs";

/** Bytes of lines kept for a stdout that takes none; later lines are dropped until it takes some. */
const BUFFERED_BYTES = 1 << 20;

/** Bytes handed to one write at most, so that a slow stdout gets lines in pieces (as sonic-boom's 16 KiB). */
const MAX_WRITE = 16 * 1024;

/**
 * EAGAIN retries, 100 ms apart, that the main thread's writes may wait through in all, for a
 * non-blocking stdout nobody reads: past them its lines stay buffered (later ones dropped), and
 * each later write tries once more without waiting.
 */
export const SYNC_EAGAIN_RETRIES = 20;
const EAGAIN_WAIT_MS = 100;

const busy = (err: NodeJS.ErrnoException) => err.code === "EAGAIN" || err.code === "EBUSY";

/** Lines in `b` (each of pino's ends with a newline; a piece of one counts as one). */
function lines(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, i + 1)) n++;
  return b.length > 0 && b[b.length - 1] !== 10 ? n + 1 : n;
}

/** pino's destination for the agent: asynchronous until `toSync`. */
export class AgentLogStream {
  /** Lines not yet handed to a write. */
  private readonly queue: Buffer[] = [];
  /** Bytes in `queue` and in the pool's write: what BUFFERED_BYTES bounds. */
  private held = 0;
  /** The bytes of the pool's write under way, which the main thread leaves to it. */
  private inPool: Buffer | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** The main thread's EAGAIN retries left; undefined until `toSync`. */
  private syncRetries: number | undefined;
  private flushing = false;
  /** Lines dropped since the last notice. */
  private unreported = 0;
  /** Lines dropped since the start: for a full buffer, the reader gone (EPIPE), or another write error. */
  dropped = 0;

  /** `notice(n)` is called once writing works again after `n` lines were dropped, to log that (through this stream). */
  constructor(
    private readonly fd: number,
    private readonly notice: (dropped: number) => void,
  ) {}

  write(line: string): void {
    const b = Buffer.from(line);
    if (this.held + b.length > BUFFERED_BYTES) return this.drop(1);
    this.queue.push(b);
    this.held += b.length;
    if (this.syncRetries === undefined) this.startPoolWrite();
    else this.flush();
  }

  /**
   * From here on each line is written before `write` returns, after what the pool still held
   * (a line it was writing then may come later). Called again, it retries what is still buffered.
   * Bounded and never throwing, it is also the exit hook: a throw in 'exit' skips the hooks after it.
   */
  toSync(): void {
    if (this.syncRetries === undefined) {
      this.syncRetries = SYNC_EAGAIN_RETRIES;
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.flush();
  }

  private drop(n: number): void {
    this.dropped += n;
    this.unreported += n;
  }

  /** Drops what is queued: the reader is gone, or stdout failed otherwise. */
  private dropQueue(): void {
    for (const b of this.queue.splice(0)) {
      this.held -= b.length;
      this.drop(lines(b));
    }
  }

  /** Up to MAX_WRITE bytes of whole lines off the queue's head (at least one line). */
  private take(): Buffer {
    let end = 1;
    let bytes = this.queue[0].length;
    while (end < this.queue.length && bytes + this.queue[end].length <= MAX_WRITE) bytes += this.queue[end++].length;
    return end === 1 ? this.queue.shift()! : Buffer.concat(this.queue.splice(0, end), bytes);
  }

  /** `n` bytes of `b` written; its rest goes back to the queue's head. */
  private written(b: Buffer, n: number): void {
    this.held -= n;
    if (n < b.length) this.queue.unshift(b.subarray(n));
    if (n > 0 && this.unreported > 0) {
      // Its line goes through `write`, queued behind what is queued now.
      const dropped = this.unreported;
      this.unreported = 0;
      this.notice(dropped);
    }
  }

  private startPoolWrite(): void {
    if (this.inPool || this.retryTimer || this.queue.length === 0) return;
    const b = this.take();
    this.inPool = b;
    writeAsync(this.fd, b, (err, n) => {
      this.inPool = undefined;
      if (err && busy(err)) {
        this.queue.unshift(b);
        // Through the pool a retry is a timer, until stdout takes the line; once stopping, the
        // main thread's bounded retries take it over.
        if (this.syncRetries === undefined)
          this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            this.startPoolWrite();
          }, EAGAIN_WAIT_MS);
        else this.flush();
        return;
      }
      if (err) {
        this.held -= b.length;
        this.drop(lines(b));
        this.dropQueue();
        // EPIPE drops the lines and the agent runs on (later lines are tried again: a FIFO may get
        // a reader anew); any other error ends a running agent, as before, but never a stop.
        if (err.code !== "EPIPE" && this.syncRetries === undefined) throw err;
        return;
      }
      this.written(b, n);
      if (this.syncRetries === undefined) this.startPoolWrite();
      else this.flush();
    });
  }

  /** The main thread writes the queue: bounded by the EAGAIN retries, and never throwing. */
  private flush(): void {
    // A line logged by `notice` meanwhile is queued, and written by the loop under way.
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const b = this.take();
        let n: number;
        try {
          n = writeSync(this.fd, b);
        } catch (err) {
          if (busy(err as NodeJS.ErrnoException)) {
            this.queue.unshift(b);
            if (this.syncRetries! <= 0) return;
            this.syncRetries!--;
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, EAGAIN_WAIT_MS);
            continue;
          }
          this.held -= b.length;
          this.drop(lines(b));
          this.dropQueue();
          return;
        }
        this.written(b, n);
      }
    } finally {
      this.flushing = false;
    }
  }
}
