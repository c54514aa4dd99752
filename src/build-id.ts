// Which build of weft's JavaScript this is. `npm run build:ts` replaces this file's output,
// dist/src/build-id.js, with a hash of dist/src (build:info, recordBuildId), so code installed anew under a
// running agent has another id: a dataplane worker thread compares the main thread's with its own
// (dataplane/worker.ts) and refuses to run mixed builds. Without that step (`tsc` alone) every
// build says "unbuilt", alike.
export const BUILD_ID: string = "unbuilt";
