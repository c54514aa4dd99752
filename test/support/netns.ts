// Namespaces for tests come from the lab (src/lab/netns.ts); this adds the rule for when kernel
// tests may run.
import { execFileSync } from "node:child_process";

export { Netns, vethPair } from "../../src/lab/netns.js";

/**
 * Root and iproute2 are needed for kernel tests. Outside CI a machine without them skips those
 * tests; in CI (CI=true) a skip would hide a failure, so it throws instead.
 */
export function canUseNetns(): boolean {
  const ok = process.getuid?.() === 0 && hasIp();
  if (!ok && process.env.CI === "true") {
    throw new Error("kernel tests need root and iproute2, and CI=true forbids skipping them");
  }
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
