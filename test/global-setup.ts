// Dataplane workers run compiled code (dist/, build/): rebuild once before the tests, so they
// always exercise the sources as they are. WEFT_TEST_NO_BUILD=1 skips it when you just built.
import { execFileSync } from "node:child_process";

export default function setup(): void {
  if (process.env.WEFT_TEST_NO_BUILD === "1") return;
  execFileSync("npm", ["run", "--silent", "build"], { stdio: "inherit" });
}
