// `npm run build:info`, the last step of building dist/: records which commit it was built from
// (build-info.ts).
import { recordBuild } from "./build-info.js";

recordBuild();
