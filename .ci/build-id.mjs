// Writes dist/src/build-id.js (see src/build-id.ts): BUILD_ID is a hash of every other .js file
// under dist/src, by path and content, so the same sources give the same id and any change another.
// Run by `npm run build:ts` after tsc.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "src");
const out = "build-id.js";
const hash = createHash("sha256");
const files = readdirSync(dist, { recursive: true, encoding: "utf8" })
  .filter((f) => f.endsWith(".js") && f !== out)
  .sort();
for (const f of files)
  hash
    .update(`${f}\0`)
    .update(readFileSync(join(dist, f)))
    .update("\0");
const id = hash.digest("hex").slice(0, 16);
writeFileSync(
  join(dist, out),
  `// Written by .ci/build-id.mjs (see src/build-id.ts).\nexport const BUILD_ID = "${id}";\n`,
);
