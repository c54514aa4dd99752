// Keys as flannel's Go code reads them: encoding/json takes a JSON key that equals a field's name
// ignoring case as that field. Shared by net-conf.json and the CNI plugin's network config.

/**
 * `obj` with each key that is not in `known` but equals one of them ignoring case renamed to it.
 * Two spellings of one key are refused (`clash` makes the error): Go would silently take the
 * later one. For the keys in `exactWins`, the exact spelling drops other spellings instead: libcni
 * adds name, cniVersion, prevResult and runtimeConfig to a plugin's config over whatever spelling the file had,
 * and the added one must not be refused (Go takes whichever sorts last; the file's own spelling
 * of any other key, twice, stays refused).
 */
export function withKnownKeys(
  obj: Record<string, unknown>,
  known: readonly string[],
  clash: (first: string, second: string, key: string) => Error,
  exactWins: readonly string[] = [],
): Record<string, unknown> {
  const byLowerCase = new Map(known.map((k) => [k.toLowerCase(), k]));
  const spelling = new Map<string, string>();
  const entries: [string, unknown][] = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = known.includes(k) ? k : (byLowerCase.get(k.toLowerCase()) ?? k);
    if (key !== k && exactWins.includes(key) && Object.hasOwn(obj, key)) continue;
    const other = spelling.get(key);
    if (other !== undefined) throw clash(other, k, key);
    spelling.set(key, k);
    entries.push([key, v]);
  }
  // fromEntries, not assignment: a key "__proto__" stays a key (and is refused as unknown).
  return Object.fromEntries(entries);
}
