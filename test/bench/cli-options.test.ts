// The bench scripts' option parsers: a value that is not what the option takes is an
// InvalidArgumentError (commander prints it with the option's name and exits 1), never NaN.
import { InvalidArgumentError } from "commander";
import { describe, expect, it } from "vitest";
import { listOf, numberValue, onOff, oneOf, wholeNumber } from "../../bench/cli-options.js";

describe("bench option parsers", () => {
  it("reads numbers within their range and refuses anything else", () => {
    expect(numberValue({ min: 1 })("2.5")).toBe(2.5);
    expect(numberValue({ min: -20, max: 19, whole: true })("-10")).toBe(-10);
    expect(wholeNumber(0)("0")).toBe(0);
    for (const v of ["", " ", "x", "3x", "NaN", "Infinity", "0.5"])
      expect(() => numberValue({ min: 1 })(v), v).toThrow(InvalidArgumentError);
    expect(() => wholeNumber(1)("1.5")).toThrow("not a whole number of at least 1");
    expect(() => numberValue({ min: 0, max: 1 })("1.5")).toThrow("not a number from 0 to 1");
    expect(() => numberValue()("x")).toThrow(/^not a number$/);
  });

  it("reads choices and on/off as written", () => {
    expect(oneOf(["udp", "wasm-vxlan"])("udp")).toBe("udp");
    expect(() => oneOf(["udp", "wasm-vxlan"])("UDP")).toThrow("not one of udp, wasm-vxlan");
    expect([onOff("on"), onOff("off")]).toEqual([true, false]);
    expect(() => onOff("yes")).toThrow(InvalidArgumentError);
  });

  it("reads comma lists item by item and names the bad item", () => {
    expect(listOf(wholeNumber(1))("1,2,4")).toEqual([1, 2, 4]);
    expect(listOf(onOff)("on,off")).toEqual([true, false]);
    expect(() => listOf(wholeNumber(1))("1,,4")).toThrow('"": not a whole number of at least 1');
    expect(() => listOf(oneOf(["a", "b"]))("a,c")).toThrow('"c": not one of a, b');
  });
});
