// `npm run build:info`, the last step of building dist/: records which commit it was built from
// and the id of its JavaScript and Wasm module (build-info.ts, build-id.ts).
import { recordBuild, recordBuildId } from "./build-info.js";

recordBuild();
recordBuildId();
