// A file descriptor, owned or borrowed. close() is explicit and idempotent; a closed handle refuses
// to act, so it can never touch an unrelated file that reused its fd number. A borrowed handle (a
// worker thread's view of an fd its opener lent it) lets go on close() and leaves the fd open: the
// owner closes it, after the borrower is done.
import { WeftError } from "../errors.js";
import { native } from "./native.js";

export abstract class FdHandle {
  private current: number;

  /** `fd` becomes this handle's to close, unless `borrowed`. */
  protected constructor(
    fd: number,
    private readonly kind: string,
    protected readonly borrowed = false,
  ) {
    this.current = fd;
  }

  get fd(): number {
    if (this.current < 0) throw new WeftError("IO_CLOSED", `this ${this.kind} is closed; open a new one`);
    return this.current;
  }

  get closed(): boolean {
    return this.current < 0;
  }

  close(): void {
    if (this.current < 0) return;
    const fd = this.current;
    this.current = -1;
    if (!this.borrowed) native.closeFd(fd);
  }
}
