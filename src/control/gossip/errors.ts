// Errors of the membership layer. Each carries a stable code (for callers and metrics) and a
// message that says what to do about it.

export type GossipErrorCode =
  | "CONFIG_INVALID"
  | "KEY_INVALID"
  | "KEY_FILE_INVALID"
  | "KEY_UNKNOWN"
  | "KEY_IN_USE"
  | "KEY_ID_COLLISION"
  | "NODE_UNKNOWN"
  | "MESSAGE_TOO_BIG"
  | "META_TOO_BIG"
  | "STATE_TOO_BIG"
  | "NOT_RUNNING"
  | "BAD_RESPONSE"
  | "FRAME_REFUSED"
  | "NAME_CONFLICT";

export class GossipError extends Error {
  constructor(
    readonly code: GossipErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = "GossipError";
  }
}
