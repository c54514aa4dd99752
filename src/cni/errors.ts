// CNI errors as the spec defines them: a numeric code (1-99 reserved for the spec's meanings,
// 100 and up for a plugin's own), a message, details. The plugin prints one as JSON on stdout
// and exits 1; a runtime (src/cni/runtime.ts) reads one back from a plugin it ran.

/** The spec's well-known codes (CNI 1.0.0, "Error" section), and this plugin's own from 100 on. */
export const CNI_ERROR = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODE_FAILURE: 6,
  INVALID_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  /** A plugin we ran died without printing a CNI error. */
  PLUGIN_CRASHED: 100,
  /** CHECK: the pod's address is no longer in this node's subnet (the lease changed). */
  ADDRESS_OUTSIDE_SUBNET: 101,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = "",
  ) {
    super(message);
    this.name = "CniError";
  }

  /** The error as the spec's JSON object. */
  toResult(cniVersion: string): { cniVersion: string; code: number; msg: string; details?: string } {
    return { cniVersion, code: this.code, msg: this.message, ...(this.details && { details: this.details }) };
  }
}
