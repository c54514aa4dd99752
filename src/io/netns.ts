// Running code with the calling thread inside another network namespace (setns affects just this
// thread), so that TUN devices and sockets created meanwhile belong to that namespace. Tests and
// benchmarks use it to keep every device out of the root namespace.
import { native } from "./native.js";

/**
 * Runs `fn` inside the namespace named `name` (as `ip netns add` made it, under /run/netns) and
 * always returns to the original namespace afterwards, also when `fn` throws. `fn` must be
 * synchronous: code after an `await` would run back in the original namespace.
 */
export function withNetns<T>(name: string, fn: () => T extends PromiseLike<unknown> ? never : T): T {
  const original = native.netnsEnter(`/run/netns/${name}`);
  try {
    const result = fn();
    if (typeof (result as { then?: unknown } | null)?.then === "function") {
      throw new TypeError("withNetns takes a synchronous function; work after an await would leave the namespace");
    }
    return result;
  } finally {
    native.netnsRestore(original);
  }
}
