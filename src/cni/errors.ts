// CNI errors as the spec defines them: a numeric code (1-99 reserved for the spec's meanings,
// 100 and up for a plugin's own), a message, details. The plugin prints one as JSON on stdout
// and exits 1; a runtime (src/cni/runtime.ts) reads one back from a plugin it ran. Inside weft
// they are WeftErrors like any other, with a CNI_ code named after the number.
import { errorMessage, WeftError, type CniErrorCode } from "../errors.js";

/** The spec's well-known codes (CNI 1.1.0, "Error" section), and this plugin's own from 100 on. */
export const CNI_ERROR = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODE_FAILURE: 6,
  INVALID_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  /** STATUS (1.1.0): the plugin cannot serve ADD now (the agent is not ready). */
  NOT_AVAILABLE: 50,
  /** A plugin we ran died without printing a CNI error. */
  PLUGIN_CRASHED: 100,
  /** CHECK: the pod's address is no longer in this node's subnet (the lease changed). */
  ADDRESS_OUTSIDE_SUBNET: 101,
} as const;

const NAMES: Record<number, CniErrorCode> = {
  1: "CNI_INCOMPATIBLE_VERSION",
  2: "CNI_UNSUPPORTED_FIELD",
  3: "CNI_UNKNOWN_CONTAINER",
  4: "CNI_INVALID_ENV",
  5: "CNI_IO_FAILURE",
  6: "CNI_DECODE_FAILURE",
  7: "CNI_INVALID_CONFIG",
  11: "CNI_TRY_AGAIN_LATER",
  50: "CNI_NOT_AVAILABLE",
  100: "CNI_PLUGIN_CRASHED",
  101: "CNI_ADDRESS_OUTSIDE_SUBNET",
};

export class CniError extends WeftError<CniErrorCode> {
  constructor(
    /** The spec's number (`code` in the error JSON). */
    readonly cniCode: number,
    message: string,
    readonly details = "",
  ) {
    super(NAMES[cniCode] ?? "CNI_PLUGIN_ERROR", message);
  }

  /** The error as the spec's JSON object. */
  toResult(cniVersion: string): { cniVersion: string; code: number; msg: string; details?: string } {
    return { cniVersion, code: this.cniCode, msg: this.message, ...(this.details && { details: this.details }) };
  }
}

/** Any failure as a CNI error: one that is not already is an unexpected I/O failure (5). */
export function asCniError(e: unknown): CniError {
  return e instanceof CniError ? e : new CniError(CNI_ERROR.IO_FAILURE, `unexpected failure: ${errorMessage(e)}`);
}
