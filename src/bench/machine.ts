// What a benchmark report needs to be reproduced: the machine it ran on and weft's exact source.
import { cpus, loadavg, release, totalmem } from "node:os";

export interface MachineInfo {
  cores: number;
  cpuModel: string;
  kernel: string;
  node: string;
  memoryGiB: number;
  /** 1-minute load average when the run started: others' work on the machine shows up here. */
  loadAverageAtStart: number;
  /**
   * 1-minute load average right after the last traffic round, before the idle window and the
   * microbenchmarks (absent when the run did not get there).
   */
  loadAverageAfterTraffic?: number;
}

export function machineInfo(): MachineInfo {
  return {
    cores: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? "unknown",
    kernel: release(),
    node: process.version,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    loadAverageAtStart: loadavg()[0],
  };
}
