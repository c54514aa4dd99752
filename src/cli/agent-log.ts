// The agent's log on stdout. While it runs, lines are written through libuv's thread pool, so a
// stdout nobody reads (journald stuck, a pipe left unread) holds one pool thread and a bounded
// buffer, never the event loop (gossip, health probes). Once a stop begins they are written by the
// main thread: hanging file-system calls, which are what make a stop hang, can hold every pool
// thread, and a second SIGINT's kill dropped what was still queued behind them.
// Our own writer, not sonic-boom: its flushSync retried an error other than EAGAIN (EPIPE, the
// reader gone) without end, so a stop beginning with lines queued for a closed pipe hung there.
import { fstatSync, write as writeAsync, writeSync } from "node:fs";

/** Bytes of lines kept for a stdout that takes none; later lines are dropped until it takes some. */
const BUFFERED_BYTES = 1 << 20;

/**
 * Bytes handed to one write at most, unless one line is longer (it is then written alone): Linux's
 * PIPE_BUF, up to which a pipe takes a write whole or not at all, never with another writer's bytes
 * inside it (a longer write to a blocking pipe can get them wherever it waits for room).
 */
const PIPE_BUF = 4096;

/**
 * EAGAIN retries, 100 ms apart, that the main thread's writes may wait through in all, for a
 * non-blocking stdout nobody reads: past them its lines stay buffered (later ones dropped), and
 * each later write tries once more without waiting.
 */
export const SYNC_EAGAIN_RETRIES = 20;
const EAGAIN_WAIT_MS = 100;

const busy = (err: NodeJS.ErrnoException) => err.code === "EAGAIN" || err.code === "EBUSY";

const size = (q: string | Buffer) => (typeof q === "string" ? Buffer.byteLength(q) : q.length);

/** Lines in `b` (each of pino's ends with a newline; a piece of one counts as one). */
function lines(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, i + 1)) n++;
  return b.length > 0 && b[b.length - 1] !== 10 ? n + 1 : n;
}

/**
 * Lines in a queued entry whose content is not all out: a leading newline (a line's rest when a
 * partial write stopped just before it, or the one ending a torn piece) counts none.
 */
const linesIn = (q: string | Buffer) => (typeof q === "string" ? 1 : lines(q) - (q[0] === 10 ? 1 : 0));

/**
 * `fd` is a pipe or a socket: a write to it longer than PIPE_BUF can get another writer's bytes
 * inside it. A regular file (with O_APPEND or not: the offset's lock), a TTY (its write lock) or
 * /dev/null takes each write whole, before or after the other's. Unknown (fstat failed): as a pipe.
 */
function splits(fd: number): boolean {
  try {
    const s = fstatSync(fd);
    return s.isFIFO() || s.isSocket();
  } catch {
    return true;
  }
}

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
  /** The bytes of the pool's write under way. */
  private inPool: Buffer | undefined;
  /**
   * That write is of whole lines within PIPE_BUF, as the main thread's beside it must be on a pipe:
   * it takes each whole, before or after the other. Beside any other (a longer line, a line's rest)
   * the main thread leaves its lines queued for the write's callback, until `atExit`.
   */
  private poolWhole = false;
  /** See `splits`: else the main thread writes beside any pool write but a line's rest. */
  private readonly splits: boolean;
  /** What went out ends within a line: its rest is queued first, or, if dropped, a newline ends it. */
  private midLine = false;
  private retryTimer: NodeJS.Timeout | undefined;
  /** The main thread's EAGAIN retries left; undefined until `toSync`. */
  private syncRetries: number | undefined;
  private flushing = false;
  /** The last `write` dropped its line, the buffer full: a notice that was, carries its count to the next. */
  private refused = false;
  /** Lines dropped since the last notice. */
  private unreported = 0;
  /**
   * The notice queued last, until a byte of it is written (its line, then the write it begins): one
   * lost whole carries its count to the next, and no other is queued meanwhile. Neither is set
   * while `notice` has yet to write it.
   */
  private unsaid: { count: number; line?: string; bytes?: Buffer } | undefined;
  /** Lines dropped since the start: for a full buffer, the reader gone (EPIPE), or another write error. */
  dropped = 0;

  /** `notice(n)` is called once writing works again after `n` lines were dropped, to log that (through this stream). */
  constructor(
    private readonly fd: number,
    private readonly notice: (dropped: number) => void,
  ) {
    this.splits = splits(fd);
  }

  write(line: string): void {
    const bytes = Buffer.byteLength(line);
    this.refused = this.held + bytes > BUFFERED_BYTES;
    if (this.refused) return this.drop(1);
    if (this.unsaid && !this.unsaid.line && !this.unsaid.bytes) this.unsaid.line = line;
    this.queue.push(line);
    this.held += bytes;
    if (this.syncRetries === undefined) this.startPoolWrite();
    else this.flush();
  }

  /**
   * From here on each line is written before `write` returns, unless, on a pipe or socket, a pool
   * write under way is more than whole lines within PIPE_BUF (on any stdout, a line's rest): it
   * cannot be waited for (its callback needs the event loop), so the lines wait for its callback,
   * or `atExit`. Beside any other pool write, lines may come before its own. Called again, it
   * retries what is still buffered. Bounded and never throwing.
   */
  toSync(): void {
    if (this.syncRetries === undefined) {
      this.syncRetries = SYNC_EAGAIN_RETRIES;
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    this.flush();
  }

  /**
   * `toSync` for the last writes: the exit hook (a throw in 'exit' skips the hooks after it) and
   * before a kill. No callback can follow, so no line waits for one: beside a pool write that may
   * end within a line on a pipe, a newline comes first (a line possibly split, or an empty line if
   * that write is done, beats lines certainly lost); elsewhere that write is taken whole. The pool's
   * write goes on: process.exit waits for it (libuv joins its threads), a kill ends it. Lines still
   * queued after the EAGAIN retries are counted as dropped.
   */
  atExit(): void {
    if (this.inPool && !this.besidePool()) this.midLine = this.splits && !this.poolWhole;
    this.inPool = undefined;
    this.toSync();
    for (const q of this.queue.splice(0)) {
      this.held -= size(q);
      this.drop(linesIn(q));
    }
  }

  private drop(n: number): void {
    this.dropped += n;
    this.unreported += n;
  }

  /**
   * The write of `b` failed (not EAGAIN: the reader is gone, or stdout failed otherwise): `b` and
   * what is queued are dropped, and a notice not begun leaves its count to the next.
   */
  private failed(b: Buffer): void {
    this.held -= b.length;
    this.drop(linesIn(b));
    for (const q of this.queue.splice(0)) {
      this.held -= size(q);
      this.drop(linesIn(q));
    }
    // Unless it is in the pool's write under way, whose callback tells.
    if (this.unsaid && (!this.unsaid.bytes || this.unsaid.bytes !== this.inPool)) {
      this.unreported += this.unsaid.count;
      this.unsaid = undefined;
    }
  }

  /** The queue's head is whole lines within PIPE_BUF, as `take` then returns. */
  private wholeAtHead(): boolean {
    // An empty queue (atExit with nothing left to say) has no head to split.
    return !this.midLine && (this.queue.length === 0 || size(this.queue[0]) <= PIPE_BUF);
  }

  /**
   * The main thread may write the queue's head now: no pool write is under way, or neither can
   * split the other's lines (on a file, a TTY or /dev/null, unless that write is a line's rest).
   */
  private besidePool(): boolean {
    if (!this.inPool) return true;
    if (!this.splits) return !this.midLine;
    return this.poolWhole && this.wholeAtHead();
  }

  /**
   * The queue's head if bytes, else up to PIPE_BUF bytes of its lines (at least one, the notice
   * first in a write of its own), encoded, after a newline if a line was torn.
   */
  private take(): Buffer {
    const head = this.queue[0];
    if (typeof head !== "string") return this.queue.shift() as Buffer;
    // In the same write as the lines: on a pipe, a pool write may come between two (`atExit`).
    const lead = this.midLine ? "\n" : "";
    this.held += lead.length;
    let end = 1;
    let bytes = lead.length + Buffer.byteLength(head);
    for (; end < this.queue.length; end++) {
      const q = this.queue[end];
      if (typeof q !== "string" || q === this.unsaid?.line || bytes + Buffer.byteLength(q) > PIPE_BUF) break;
      bytes += Buffer.byteLength(q);
    }
    const b = Buffer.from(lead + this.queue.splice(0, end).join(""));
    if (this.unsaid && head === this.unsaid.line) this.unsaid = { count: this.unsaid.count, bytes: b };
    return b;
  }

  /** `n` bytes of `b` written; its rest goes back to the queue's head. */
  private written(b: Buffer, n: number): void {
    this.held -= n;
    // b itself if none was written, so that a notice's bytes stay its own.
    const rest = n === 0 ? b : b.subarray(n);
    if (n < b.length) this.queue.unshift(rest);
    if (n === 0) return;
    this.midLine = b[n - 1] !== 10;
    // Begun, unless only the newline before it went out.
    if (b === this.unsaid?.bytes) this.unsaid = n === 1 && b[0] === 10 ? { ...this.unsaid, bytes: rest } : undefined;
    if (this.unreported > 0 && !this.unsaid) {
      // Its line goes through `write`, queued behind what is queued now; if the buffer has no room
      // for it, it is dropped itself, and the next notice counts these lines too.
      const count = this.unreported;
      this.unreported = 0;
      this.refused = false;
      this.unsaid = { count };
      this.notice(count);
      if (this.refused) this.unreported += count;
      // Refused, or nothing written: no notice is queued.
      if (this.unsaid && !this.unsaid.line && !this.unsaid.bytes) this.unsaid = undefined;
    }
  }

  private startPoolWrite(): void {
    if (this.inPool || this.retryTimer || this.queue.length === 0) return;
    this.poolWhole = this.wholeAtHead();
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
        this.failed(b);
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
      while (this.queue.length > 0 && this.besidePool()) {
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
          this.failed(b);
          return;
        }
        this.written(b, n);
      }
    } finally {
      this.flushing = false;
    }
  }
}
