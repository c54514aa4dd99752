// Namespaces for tests come from the lab (src/lab/netns.ts); this adds the rule for when kernel
// tests may run.
import { execFileSync } from "node:child_process";

export { Netns, vethPair } from "../../src/lab/netns.js";

/**
 * Root and iproute2 are needed for kernel tests. Outside CI a machine without them skips those
 * tests; in CI (CI=true) a skip would hide a failure, so it throws instead.
 */
export function canUseNetns(): boolean {
  return mayRun(process.getuid?.() === 0 && hasIp(), "kernel tests need root and iproute2");
}

/** Whether the test runs as root, by the same rule: in CI (CI=true) not being root throws. */
export function canRunAsRoot(): boolean {
  return mayRun(process.getuid?.() === 0, "this test needs root");
}

/** Whether `ok` (what a test needs, `needs` saying what): false skips it, but in CI (CI=true) throws. */
export function mayRun(ok: boolean, needs: string): boolean {
  if (!ok && process.env.CI === "true") throw new Error(`${needs}, and CI=true forbids skipping`);
  return ok;
}

function hasIp(): boolean {
  try {
    execFileSync("ip", ["-V"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
