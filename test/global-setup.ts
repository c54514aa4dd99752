// Dataplane workers run compiled code (dist/, build/): rebuild once before the tests, so they
// always exercise the sources as they are.
import { execFileSync } from "node:child_process";

export default function setup(): void {
  execFileSync("npm", ["run", "--silent", "build"], { stdio: "inherit" });
}
