// Option merging for the control plane. `{ ...defaults, ...options }` lets an explicit
// `undefined` (an optional flag that was not given, passed straight on) override a default;
// that once turned the 24 h reclaim grace into "reclaim at once". Every layer of the control
// plane merges its options here instead, so an absent value always means "the default".

/** `defaults` with every key of `options` that is not undefined laid over it. */
export function withDefaults<T extends object>(
  defaults: T,
  options: { readonly [K in keyof T]?: T[K] | undefined } = {},
): T {
  const out = { ...defaults };
  for (const key of Object.keys(options) as Array<keyof T>) {
    const value = options[key];
    if (value !== undefined) out[key] = value as T[keyof T];
  }
  return out;
}
