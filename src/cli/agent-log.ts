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

const NEWLINE = Buffer.from("\n");

const busy = (err: NodeJS.ErrnoException) => err.code === "EAGAIN" || err.code === "EBUSY";

/** Lines in `b` (each of pino's ends with a newline; a piece of one counts as one). */
function lines(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, i + 1)) n++;
  return b.length > 0 && b[b.length - 1] !== 10 ? n + 1 : n;
}

/** Lines in a queued entry: NEWLINE, queued alone to end a torn piece, is none (its line was counted). */
const linesIn = (q: string | Buffer) => (typeof q === "string" ? 1 : q === NEWLINE ? 0 : lines(q));

/** pino's destination for the agent: asynchronous until `toSync`. */
export class AgentLogStream {
  /**
   * Lines not yet handed to a write, as pino gave them: encoded once per write, as a line's own
   * Buffer would be a view keeping alive the 8 KiB slab it shares with other small buffers. Bytes
   * are what a write left unwritten (or gave back on EAGAIN), and go first.
   */
  private readonly queue: (string | Buffer)[] = [];
  /** Bytes in `queue` and in the pool's write: what BUFFERED_BYTES bounds. */
  private held = 0;
  /** The bytes of the pool's write under way, which the main thread leaves to it. */
  private inPool: Buffer | undefined;
  /** The main thread wrote while the pool's write was under way: if that write is partial, the line it ends within is torn. */
  private poolRaced = false;
  private retryTimer: NodeJS.Timeout | undefined;
  /** The main thread's EAGAIN retries left; undefined until `toSync`. */
  private syncRetries: number | undefined;
  private flushing = false;
  /** The last `write` dropped its line, the buffer full: a notice that was, carries its count to the next. */
  private refused = false;
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
    const bytes = Buffer.byteLength(line);
    this.refused = this.held + bytes > BUFFERED_BYTES;
    if (this.refused) return this.drop(1);
    this.queue.push(line);
    this.held += bytes;
    if (this.syncRetries === undefined) this.startPoolWrite();
    else this.flush();
  }

  /**
   * From here on each line is written before `write` returns. A pool write still under way cannot
   * be waited for (its callback needs the event loop), so its lines may come after these; the main
   * thread's first write then begins with a newline, and if the pool's write turns out partial the
   * rest of the line it tore is dropped (counted) and its newline written, so no line is joined to
   * that piece; an empty line may appear. Called again,
   * it retries what is still buffered. Bounded and never throwing, it is also the exit hook: a throw
   * in 'exit' skips the hooks after it.
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
    for (const q of this.queue.splice(0)) {
      this.held -= typeof q === "string" ? Buffer.byteLength(q) : q.length;
      this.drop(linesIn(q));
    }
  }

  /** The queue's head if bytes, else up to MAX_WRITE bytes of its lines (at least one), encoded. */
  private take(): Buffer {
    const head = this.queue[0];
    if (typeof head !== "string") return this.queue.shift() as Buffer;
    let end = 1;
    let bytes = Buffer.byteLength(head);
    for (; end < this.queue.length; end++) {
      const q = this.queue[end];
      if (typeof q !== "string" || bytes + Buffer.byteLength(q) > MAX_WRITE) break;
      bytes += Buffer.byteLength(q);
    }
    return Buffer.from(this.queue.splice(0, end).join(""));
  }

  /**
   * `n` bytes of `b` written; its rest goes back to the queue's head. `torn`: the main thread wrote
   * while this write was under way, so a piece of a line it wrote may be followed by other lines
   * already: the rest of that line is dropped, its newline kept to end the piece.
   */
  private written(b: Buffer, n: number, torn = false): void {
    this.held -= n;
    // The bytes left, as queue entries; b itself if none was written, so that NEWLINE stays NEWLINE.
    let rest = [n === 0 ? b : b.subarray(n)];
    if (torn && n < b.length && b[n - 1] !== 10) {
      const end = b.indexOf(10, n);
      const cut = end < 0 ? b.length : end;
      // A cut just before the line's newline leaves nothing of it to drop.
      if (cut > n) this.drop(1);
      this.held -= cut - n;
      rest = end < 0 ? [] : [NEWLINE, b.subarray(end + 1)];
    }
    this.queue.unshift(...rest.filter((r) => r.length > 0));
    if (n > 0 && this.unreported > 0) {
      // Its line goes through `write`, queued behind what is queued now; if the buffer has no room
      // for it, it is dropped itself, and the next notice counts these lines too. Lines dropped
      // after it was queued (a write error) are counted anew, not with these.
      const dropped = this.unreported;
      this.unreported = 0;
      this.refused = false;
      this.notice(dropped);
      if (this.refused) this.unreported += dropped;
    }
  }

  private startPoolWrite(): void {
    if (this.inPool || this.retryTimer || this.queue.length === 0) return;
    const b = this.take();
    this.inPool = b;
    this.poolRaced = false;
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
        this.drop(linesIn(b));
        this.dropQueue();
        // EPIPE drops the lines and the agent runs on (later lines are tried again: a FIFO may get
        // a reader anew); any other error ends a running agent, as before, but never a stop.
        if (err.code !== "EPIPE" && this.syncRetries === undefined) throw err;
        return;
      }
      this.written(b, n, this.poolRaced);
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
        // The pool's write under way may end within a line: ours begin on a line of their own.
        const lead = this.inPool !== undefined && !this.poolRaced;
        let n: number;
        try {
          n = writeSync(this.fd, lead ? Buffer.concat([NEWLINE, b]) : b);
          if (lead) {
            this.poolRaced = true;
            n = Math.max(0, n - 1);
          }
        } catch (err) {
          if (busy(err as NodeJS.ErrnoException)) {
            this.queue.unshift(b);
            if (this.syncRetries! <= 0) return;
            this.syncRetries!--;
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, EAGAIN_WAIT_MS);
            continue;
          }
          this.held -= b.length;
          this.drop(linesIn(b));
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
