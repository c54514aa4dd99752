// Which build of weft's code this is, as `npm run build:info` (the last step of `npm run build:ts`)
// recorded it in dist/build-id.json: a hash of dist/src's JavaScript and build/weft.wasm, and the
// module's own hash. tsc never writes that file, and build:info replaces it whole (a rename), so a
// rebuild never shows a half-written or placeholder id. Code installed anew under a running agent
// has another id: a dataplane worker thread compares the main thread's with the one it reads at
// its start (dataplane/worker.ts), and hotPathModule() compares the module it compiles with the
// recorded hash. Without the file (`tsc` alone, or no dist/) every reader says "unbuilt", alike.
import { readFileSync } from "node:fs";
import { projectFile } from "./paths.js";

export interface BuildId {
  /** The build's id, or "unbuilt". */
  id: string;
  /** sha256 (hex) of the build/weft.wasm it was built with; undefined when unbuilt. */
  wasm?: string;
}

export const BUILD_ID_FILE = () => projectFile("dist", "build-id.json");

function readBuildId(): BuildId {
  try {
    const r = JSON.parse(readFileSync(BUILD_ID_FILE(), "utf8"));
    if (typeof r.id === "string" && typeof r.wasm === "string") return { id: r.id, wasm: r.wasm };
  } catch {}
  return { id: "unbuilt" };
}

/**
 * This process's (or worker thread's) build, read as its code loads, so with the code it belongs
 * to: a later install does not change it.
 */
export const BUILD: BuildId = readBuildId();
