import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: {
    // Tests run src/ in the main thread and dataplane workers from dist/: the main thread takes the
    // build id of dist/ (src/build-id.ts), which the workers compare with theirs.
    alias: [
      { find: /^.*\/build-id\.js$/, replacement: fileURLToPath(new URL("dist/src/build-id.js", import.meta.url)) },
    ],
  },
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    // Kernel tests build namespaces and devices; running files one after another keeps them from
    // competing for the 2 cores and makes failures easy to read.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
