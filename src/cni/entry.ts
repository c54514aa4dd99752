#!/usr/bin/env node
// The file the installed launcher runs: always the plugin, whatever path (symlinks included)
// led here. (main.ts runs the plugin too when it is the file run, for launchers installed before
// this one existed.)
import { cniMain } from "./main.js";

process.exitCode = await cniMain();
