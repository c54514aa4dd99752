// Result codes of the route table API. Success is 0 (or a next-hop index >= 0 for gets); every
// error is negative, so "r < 0" tests for failure. The TypeScript side reads the names from the
// module's exports (every export named ROUTE_ERR_*), so this file is the single list.
// No error changes anything: capacity and arguments are checked before the first write.

export const ROUTE_OK: i32 = 0;
/** routeGet/routeDelete: no rule with this exact prefix and length. Also routeLookup's "no route". */
export const ROUTE_ERR_NOT_FOUND: i32 = -1;
/** routeInsert: the prefix/length is already present; use routeReplace to change its next hop. */
export const ROUTE_ERR_EXISTS: i32 = -2;
/** Host bits set below the prefix length (10.0.0.1/24): pass the network address, as `ip route` wants. */
export const ROUTE_ERR_BAD_PREFIX: i32 = -3;
/** Prefix length outside 0..32. */
export const ROUTE_ERR_BAD_LENGTH: i32 = -4;
/** Next-hop index outside 0..maxNextHops-1 of this table. */
export const ROUTE_ERR_BAD_NEXT_HOP: i32 = -5;
/** The table holds maxRules rules: delete some or build a larger table. */
export const ROUTE_ERR_FULL_RULES: i32 = -6;
/** Every tbl8 group is in use (one per /24 holding prefixes longer than /24): build with more groups. */
export const ROUTE_ERR_FULL_TBL8: i32 = -7;
/** nextHopSet: UDP port above 65535 or MAC high part above 0xFFFF. */
export const ROUTE_ERR_BAD_FIELD: i32 = -8;
/**
 * routeTableInit: sizes outside their limits (routeTableSize gave 0), region not aligned to
 * ROUTE_TABLE_ALIGN, or region reaching past the end of memory (grow memory first).
 */
export const ROUTE_ERR_BAD_REGION: i32 = -9;
