// One error type for everything weft reports to a person: a stable code to match on and a
// message that says what happened and what to do about it.

export class WeftError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "WeftError";
  }
}
