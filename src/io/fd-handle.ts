// An owned file descriptor. close() is explicit and idempotent; a closed handle refuses to act,
// so it can never touch an unrelated file that reused its fd number.
import { WeftError } from "../errors.js";
import { native } from "./native.js";

export abstract class FdHandle {
  private current: number;

  /** `fd` becomes this handle's to close; handing it to another thread means handing that duty too. */
  protected constructor(fd: number, private readonly kind: string) {
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
    native.closeFd(fd);
  }
}
