// Value parsers for the bench/ scripts' options (commander): a value that does not read as what
// its option takes stops the script with commander's error naming the option, instead of running
// on with NaN or silently measuring nothing.
import { InvalidArgumentError } from "commander";

/** A finite number within [min, max] (a whole one with `whole`). */
export function numberValue({ min = -Infinity, max = Infinity, whole = false } = {}): (v: string) => number {
  const range =
    min > -Infinity && max < Infinity
      ? ` from ${min} to ${max}`
      : min > -Infinity
        ? ` of at least ${min}`
        : max < Infinity
          ? ` of at most ${max}`
          : "";
  const what = `${whole ? "a whole number" : "a number"}${range}`;
  return (v) => {
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n) || n < min || n > max || (whole && !Number.isInteger(n)))
      throw new InvalidArgumentError(`not ${what}`);
    return n;
  };
}

/** A whole number of at least `min`. */
export const wholeNumber = (min: number): ((v: string) => number) => numberValue({ min, whole: true });

/** One of `choices`, as written. */
export function oneOf<T extends string>(choices: readonly T[]): (v: string) => T {
  return (v) => {
    if (!(choices as readonly string[]).includes(v)) throw new InvalidArgumentError(`not one of ${choices.join(", ")}`);
    return v as T;
  };
}

/** "on" or "off", as true or false. */
export const onOff = (v: string): boolean => oneOf(["on", "off"])(v) === "on";

/** A comma-separated list (`--workers 1,2,4`), each item read by `item`; an error names the item. */
export function listOf<T>(item: (v: string) => T): (v: string) => T[] {
  return (v) =>
    v.split(",").map((x) => {
      try {
        return item(x);
      } catch (e) {
        throw e instanceof InvalidArgumentError ? new InvalidArgumentError(`"${x}": ${e.message}`) : e;
      }
    });
}
