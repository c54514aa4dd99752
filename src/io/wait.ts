// Sleeping until there is I/O: a dataplane worker blocks in waitReadable() on its TUN and UDP fds
// plus a Waker, which another thread signals to stop it or hand it work. Blocking belongs to
// worker threads only: on the main thread it would stall the event loop, so only a 0-ms poll is
// allowed there.
import { isMainThread } from "node:worker_threads";
import { WeftError } from "../errors.js";
import { FdHandle } from "./fd-handle.js";
import { native } from "./native.js";

/** Bit of waitReadable()'s result that says the waker was signalled. */
export const WAIT_WOKEN = native.WAIT_WOKEN;
/** Bit of waitReadable()'s result that says busy polling found an fd ready (after the first look). */
export const WAIT_SPUN = native.WAIT_SPUN;
/** Bit of waitReadable()'s result that says its busy-poll budget ran out and it blocked. */
export const WAIT_SLEPT = native.WAIT_SLEPT;
/** waitReadable() watches at most this many fds besides the waker. */
export const WAIT_MAX_FDS = native.WAIT_MAX_FDS;

/**
 * Blocks until a fd is readable (bit i of the result for fds[i]; an fd with a pending error counts,
 * so that the next read reports it), `wakeFd` is signalled (WAIT_WOKEN), or `timeoutMs` passes
 * (result 0; -1 waits for ever). wakeFd -1 means none. The waker stays signalled until drained.
 * With `spinUs` > 0 it first polls without sleeping for up to that many microseconds (busy polling;
 * between looks it yields the core to any other runnable thread); WAIT_SPUN says that found an fd
 * ready after its first look, WAIT_SLEPT that the budget ran out and it blocked.
 */
export function waitReadable(fds: readonly number[], wakeFd: number, timeoutMs: number, spinUs = 0): number {
  if (isMainThread && (timeoutMs !== 0 || spinUs !== 0)) {
    throw new WeftError(
      "IO_WAIT_ON_MAIN_THREAD",
      "a blocking wait would stall the event loop; call it in a worker thread, or poll with timeoutMs 0",
    );
  }
  return native.wait(fds, wakeFd, timeoutMs, spinUs);
}

/** An eventfd: signal() from any thread ends a waitReadable() that includes it. */
export class Waker extends FdHandle {
  private constructor(fd: number) {
    super(fd, "waker");
  }

  static open(): Waker {
    return new Waker(native.wakerOpen());
  }

  signal(): void {
    native.wakerSignal(this.fd);
  }

  /** Clears the waker; returns how many signals it had collected (0 when none). */
  drain(): number {
    return native.wakerDrain(this.fd);
  }
}
