// Route table result codes by name, for comparing the Wasm tables (IPv4 and IPv6) with the
// references: the module's ROUTE_OK / ROUTE_ERR_* exports turned into the references' names.
import type { HotPath } from "../../src/hotpath/module.js";
import type { RouteResult } from "../reference/lpm.js";

const RESULTS: RouteResult[] = [
  "ok",
  "exists",
  "not-found",
  "bad-prefix",
  "bad-length",
  "bad-next-hop",
  "full-rules",
  "full-tbl8",
];

/** A function from a Wasm route table code to its result name; throws on an unknown code. */
export function routeResults(hp: HotPath): (code: number) => RouteResult {
  const resultOf = new Map<number, RouteResult>(
    RESULTS.map((r) => [hp.constant(r === "ok" ? "ROUTE_OK" : `ROUTE_ERR_${r.toUpperCase().replaceAll("-", "_")}`), r]),
  );
  return (code) => {
    const r = resultOf.get(code);
    if (!r) throw new Error(`unknown route table code ${code}`);
    return r;
  };
}
