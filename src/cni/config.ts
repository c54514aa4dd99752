// What the plugin reads: its network configuration (the same keys as flannel's CNI plugin, matched
// regardless of case as Go does, so a flannel cni-conf.json works unchanged) and the node's
// subnet.env written by the weft or flannel agent. One zod schema each, validating and documenting them.
import { z } from "zod";
import { CNI_ERROR, CniError } from "./errors.js";
import { networkOf, parseCidr, cidrContains, type Cidr } from "./cidr.js";
import { withKnownKeys } from "../config/keys.js";
import { DEFAULT_SUBNET_FILE } from "../paths.js";

/** The keys libcni adds to a plugin's config over the file's own spelling of them. */
const RUNTIME_ADDED_KEYS = ["name", "cniVersion", "prevResult", "runtimeConfig"] as const;

/**
 * CNI spec versions this plugin takes, flannel's (cni.All): the result is the delegate's, made in
 * the version asked for (1.1.0 with a delegate that stops at 1.0.0: see delegateVersion in plugin.ts).
 */
export const SUPPORTED_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;
/** What a missing or empty cniVersion means, to libcni and the reference plugins. */
export const DEFAULT_VERSION = "0.1.0";
export const DEFAULT_DATA_DIR = "/var/lib/cni/flannel";

const jsonObject = z.record(z.string(), z.unknown());

export const flannelNetConfSchema = z.looseObject({
  cniVersion: z
    .string()
    .optional()
    .describe(
      `CNI spec version of this config and of the result: one of ${SUPPORTED_VERSIONS.join(", ")} (none: ${DEFAULT_VERSION})`,
    ),
  name: z.string().min(1).describe("network name; given to the delegate, and host-local keeps its addresses under it"),
  type: z.string().describe("the plugin's name on CNI_PATH: flannel"),
  subnetFile: z.string().min(1).default(DEFAULT_SUBNET_FILE).describe("the agent's subnet.env"),
  dataDir: z
    .string()
    .min(1)
    .default(DEFAULT_DATA_DIR)
    .describe("where the delegate config of each container is kept for DEL and CHECK"),
  delegate: jsonObject
    .optional()
    .superRefine((d, ctx) => {
      if (!d) return;
      if ("type" in d && typeof d.type !== "string")
        ctx.addIssue({ code: "custom", message: "'type', if present, must be a string (the delegate plugin's name)" });
      if ("name" in d)
        ctx.addIssue({ code: "custom", message: "must not have 'name': it is set from the network's name" });
      if ("ipam" in d)
        ctx.addIssue({
          code: "custom",
          message: "must not have 'ipam': it is built from subnet.env (put IPAM keys in the top-level 'ipam')",
        });
    })
    .describe(
      "config of the plugin that builds the pod (default type bridge); ipMasq, mtu, isGateway default from subnet.env",
    ),
  ipam: jsonObject
    .optional()
    .superRefine((d, ctx) => {
      if (d && "routes" in d && !Array.isArray(d.routes))
        ctx.addIssue({ code: "custom", message: "'routes' must be a list of {dst, gw}" });
    })
    .describe(
      "IPAM keys for the delegate (default type host-local); ranges and the network routes are added from subnet.env",
    ),
  runtimeConfig: jsonObject.optional().describe("capability arguments from the runtime, passed to the delegate"),
  prevResult: jsonObject.optional().describe("the previous result (CHECK, DEL)"),
});

export type FlannelNetConf = z.infer<typeof flannelNetConfSchema>;

/**
 * What DEL reads: where the kept config is, and the runtime's prevResult. As flannel's cmdDel,
 * nothing of the delegate is checked, so a conflist edited after ADD never keeps a pod Terminating.
 */
export const delNetConfSchema = flannelNetConfSchema.pick({ dataDir: true, prevResult: true });

/**
 * What GC (1.1.0) needs to release the attachments the runtime no longer has, checked apart from
 * the rest (read only to forward GC to the delegate), so that a bad delegate key stops no cleanup.
 */
export const gcNetConfSchema = flannelNetConfSchema.pick({ cniVersion: true, name: true, dataDir: true }).extend({
  // libcni sends a nil Go slice (no pod uses the network: CRI-O) as null, and the reference
  // plugins' GC reads the key with omitempty: null and absent are the empty list to them.
  "cni.dev/valid-attachments": z
    .array(z.looseObject({ containerID: z.string(), ifname: z.string().optional() }))
    .nullish()
    .transform((a) => a ?? [])
    .describe("the attachments the runtime still has: every other one kept in dataDir is deleted"),
});

function issuesText(e: z.ZodError): string {
  return e.issues.map((i) => `${i.path.length ? i.path.join(".") : "(config)"}: ${i.message}`).join("; ");
}

/** Whether spec version `v` (none: 0.1.0) is `min` or later; undefined for a version not in SUPPORTED_VERSIONS. */
export function versionAtLeast(v: string | undefined, min: (typeof SUPPORTED_VERSIONS)[number]): boolean | undefined {
  const i = (SUPPORTED_VERSIONS as readonly string[]).indexOf(v || DEFAULT_VERSION);
  return i < 0 ? undefined : i >= SUPPORTED_VERSIONS.indexOf(min);
}

/** Parses stdin; the spec's codes for undecodable JSON (6), an unsupported version (1), bad keys (7). */
export function parseNetConf(stdin: string): FlannelNetConf {
  return decode(stdin, flannelNetConfSchema, false);
}

/** DEL's config (`delNetConfSchema`), of any version: a conflist changed since ADD must not keep a pod from going. */
export function parseDelConf(stdin: string): z.output<typeof delNetConfSchema> {
  return decode(stdin, delNetConfSchema, true);
}

export function parseGcConf(stdin: string): z.output<typeof gcNetConfSchema> {
  return decode(stdin, gcNetConfSchema, false);
}

function decode<S extends z.ZodObject>(stdin: string, schema: S, anyVersion: boolean): z.output<S> {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(CNI_ERROR.DECODE_FAILURE, `network config on stdin is not JSON: ${(e as Error).message}`);
  }
  // flannel's plugin is Go, whose encoding/json takes "Delegate" or "SubnetFile" as delegate and
  // subnetFile: ignoring them here would drop what flannel honours. The exact spelling of the keys
  // the runtime adds ("name", "cniVersion", "prevResult", "runtimeConfig") wins: it adds them whatever the file spelled.
  if (typeof raw === "object" && raw !== null && !Array.isArray(raw))
    raw = withKnownKeys(
      raw as Record<string, unknown>,
      Object.keys(schema.shape),
      (first, second, key) =>
        new CniError(
          CNI_ERROR.INVALID_CONFIG,
          `invalid network config: "${first}" and "${second}" are both the key ${key} (keys match regardless of case, as in flannel's plugin); keep one of them`,
        ),
      RUNTIME_ADDED_KEYS,
    );
  const version = (raw as { cniVersion?: unknown } | null)?.cniVersion;
  if (!anyVersion && typeof version === "string" && versionAtLeast(version, DEFAULT_VERSION) === undefined) {
    throw new CniError(
      CNI_ERROR.INCOMPATIBLE_VERSION,
      `cniVersion ${version} is not supported; use one of ${SUPPORTED_VERSIONS.join(", ")}`,
    );
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new CniError(CNI_ERROR.INVALID_CONFIG, `invalid network config: ${issuesText(r.error)}`);
  return r.data;
}

const cidrOf = (family: 4 | 6) =>
  z.string().transform((s, ctx) => {
    const c = parseCidr(s);
    if (!c || c.family !== family) {
      ctx.addIssue({ code: "custom", message: `"${s}" is not an IPv${family} prefix (address/length)` });
      return z.NEVER;
    }
    return c;
  });

/**
 * subnet.env, as flanneld (and weft's agent) writes it. Each family is present when both its
 * network and subnet are; at least one family must be.
 */
export const subnetEnvSchema = z
  .object({
    FLANNEL_NETWORK: z.string().optional().describe("the IPv4 pod network(s), comma-separated"),
    FLANNEL_SUBNET: cidrOf(4).optional().describe("this node's IPv4 subnet: its first address and prefix length"),
    FLANNEL_IPV6_NETWORK: z.string().optional().describe("the IPv6 pod network(s), comma-separated"),
    FLANNEL_IPV6_SUBNET: cidrOf(6).optional().describe("this node's IPv6 subnet"),
    FLANNEL_MTU: z
      .string()
      .regex(/^\d+$/, "must be a whole number")
      .transform(Number)
      .pipe(z.number().int().min(68).max(65535))
      .describe("the MTU pods must use"),
    FLANNEL_IPMASQ: z
      .enum(["true", "false"])
      .transform((v) => v === "true")
      .describe("whether the agent masquerades pod traffic itself"),
  })
  .transform((e, ctx) => {
    const families: Array<{ network: Cidr[]; subnet: Cidr }> = [];
    for (const [fam, netKey, subKey] of [
      [4, "FLANNEL_NETWORK", "FLANNEL_SUBNET"],
      [6, "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET"],
    ] as const) {
      const netText = e[netKey];
      const subnet = e[subKey];
      if (netText === undefined && subnet === undefined) continue;
      if (netText === undefined || subnet === undefined) {
        ctx.addIssue({
          code: "custom",
          path: [netText === undefined ? netKey : subKey],
          message: `missing, while ${netText === undefined ? subKey : netKey} is set`,
        });
        continue;
      }
      const nets = netText.split(",").map((p) => parseCidr(p));
      const bad = nets.findIndex((c) => !c || c.family !== fam);
      if (bad >= 0) {
        ctx.addIssue({
          code: "custom",
          path: [netKey],
          message: `"${netText.split(",")[bad]}" is not an IPv${fam} prefix`,
        });
        continue;
      }
      // As flannel (isSubnetAlreadyPresent): a network listed twice is one route, not two.
      const network = (nets as Cidr[]).filter((n, i, all) => all.findIndex((m) => networkOf(m) === networkOf(n)) === i);
      if (!network.some((n) => cidrContains(n, subnet))) {
        ctx.addIssue({ code: "custom", path: [subKey], message: `${networkOf(subnet)} is not inside ${netText}` });
        continue;
      }
      families.push({ network, subnet });
    }
    if (families.length === 0 && ctx.issues.length === 0)
      ctx.addIssue({
        code: "custom",
        message: "has neither FLANNEL_NETWORK/FLANNEL_SUBNET nor FLANNEL_IPV6_NETWORK/FLANNEL_IPV6_SUBNET",
      });
    return { families, mtu: e.FLANNEL_MTU, ipMasq: e.FLANNEL_IPMASQ };
  });

export type SubnetEnv = z.output<typeof subnetEnvSchema>;

/** Parses subnet.env text; a malformed file is an invalid network config (7), naming the key. */
export function parseSubnetEnvFile(text: string, path: string): SubnetEnv {
  const vars: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) vars[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  const r = subnetEnvSchema.safeParse(vars);
  if (!r.success) {
    throw new CniError(
      CNI_ERROR.INVALID_CONFIG,
      `subnet file ${path} is malformed: ${issuesText(r.error)}`,
      "it is written by the weft (or flannel) agent on this node; check that agent's log, or remove the file and restart it",
    );
  }
  return r.data;
}
