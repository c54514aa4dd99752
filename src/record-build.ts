// `npm run build:info`, the last step of building dist/: records which commit it was built from
// and the id of its JavaScript (build-info.ts).
import { recordBuild, recordBuildId } from "./build-info.js";

recordBuild();
recordBuildId();
