#!/usr/bin/env node
// The file the installed launcher runs: always the plugin, whatever path (symlinks included)
// led here. main.ts alone cannot tell whether it was run or imported (by `weft cni`).
import { cniMain } from "./main.js";

process.exitCode = await cniMain();
