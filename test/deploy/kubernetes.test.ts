// deploy/kubernetes/weft.yaml against the Kubernetes API schemas, two ways, both generated from
// Kubernetes' OpenAPI spec by the kubernetes-models package: its ajv validators (types, required
// fields, enums, formats) and its TypeScript interfaces, compiled with excess-property checks, so
// that a misspelt field fails too (the OpenAPI schemas themselves allow unknown fields, as the API
// server's non-strict decoding does). Then what the issue asks of the DaemonSet, and the configs
// checked by weft's own schemas: cni-conf.json by the CNI plugin's, net-conf.json by the agent's.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { DaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { parseNetConf } from "../../src/cni/config.js";
import { parseNetConf as parseFlannelNetConf } from "../../src/config/net-conf.js";
import { DEFAULT_SUBNET_FILE, projectFile } from "../../src/paths.js";

// biome-ignore lint/suspicious/noExplicitAny: a YAML document, checked by the schema validators below
type Doc = { apiVersion: string; kind: string; [k: string]: any };

// biome-ignore lint/suspicious/noExplicitAny: each model class takes its own document type
const MODELS: Record<string, { model: new (o: any) => { validate(): void }; type: string; module: string }> = {
  "v1/Namespace": { model: Namespace, type: "INamespace", module: "kubernetes-models/v1/Namespace" },
  "v1/ConfigMap": { model: ConfigMap, type: "IConfigMap", module: "kubernetes-models/v1/ConfigMap" },
  "apps/v1/DaemonSet": { model: DaemonSet, type: "IDaemonSet", module: "kubernetes-models/apps/v1/DaemonSet" },
};

function load(text = readFileSync(projectFile("deploy", "kubernetes", "weft.yaml"), "utf8")): Doc[] {
  return parseAllDocuments(text)
    .map((d) => {
      if (d.errors.length) throw d.errors[0];
      return d.toJS() as Doc;
    })
    .filter(Boolean);
}

/** Schema errors of every document (ajv, from the OpenAPI spec). */
function schemaErrors(docs: Doc[]): string[] {
  return docs.flatMap((d) => {
    const m = MODELS[`${d.apiVersion}/${d.kind}`];
    if (!m) return [`${d.apiVersion} ${d.kind}: no schema`];
    try {
      new m.model(d).validate();
      return [];
    } catch (e) {
      return [`${d.kind}: ${(e as Error).message}`];
    }
  });
}

/** Every document as a typed object literal, compiled: unknown fields are excess properties. */
function fieldErrors(docs: Doc[]): string[] {
  const file = join(projectFile("test", "deploy"), "__manifest_check.ts");
  const source = docs
    .map((d, i) => {
      const m = MODELS[`${d.apiVersion}/${d.kind}`];
      return `import type { ${m.type} as T${i} } from "${m.module}";\nexport const d${i}: T${i} = ${JSON.stringify(d, null, 1)};\n`;
    })
    .join("");
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const read = host.readFile.bind(host);
  host.readFile = (f) => (f === file ? source : read(f));
  const exists = host.fileExists.bind(host);
  host.fileExists = (f) => f === file || exists(f);
  const getSource = host.getSourceFile.bind(host);
  host.getSourceFile = (f, lang, ...rest) =>
    f === file ? ts.createSourceFile(f, source, lang) : getSource(f, lang, ...rest);
  const program = ts.createProgram([file], options, host);
  return ts
    .getPreEmitDiagnostics(program)
    .map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n").split("\n").slice(-1)[0]);
}

describe("deploy/kubernetes/weft.yaml", () => {
  const docs = load();
  const ds = docs.find((d) => d.kind === "DaemonSet")!;
  const cm = docs.find((d) => d.kind === "ConfigMap")!;

  it("is valid against the Kubernetes API schemas, with no unknown field", () => {
    expect(docs.map((d) => d.kind)).toEqual(["Namespace", "ConfigMap", "DaemonSet"]);
    expect(schemaErrors(docs)).toEqual([]);
    expect(fieldErrors(docs)).toEqual([]);
  }, 60_000);

  it("fails on a misspelt field, a wrong type and a missing required field", () => {
    const typo = structuredClone(docs);
    const c = typo.find((d) => d.kind === "DaemonSet")!.spec.template.spec.containers[0];
    c.securityContext.capabilites = c.securityContext.capabilities;
    delete c.securityContext.capabilities;
    expect(fieldErrors(typo)).toEqual([
      `Object literal may only specify known properties, and '"capabilites"' does not exist in type 'ISecurityContext'.`,
    ]);
    const typo2 = structuredClone(docs);
    typo2.find((d) => d.kind === "DaemonSet")!.spec.template.spec.hostNetwrok = true;
    expect(fieldErrors(typo2)).toEqual([
      `Object literal may only specify known properties, and '"hostNetwrok"' does not exist in type 'IPodSpec'.`,
    ]);
    const wrongType = structuredClone(docs);
    wrongType.find((d) => d.kind === "DaemonSet")!.spec.template.spec.hostNetwork = "yes";
    expect(schemaErrors(wrongType).join("\n")).toMatch(/hostNetwork must be boolean/);
    const missing = structuredClone(docs);
    delete missing.find((d) => d.kind === "DaemonSet")!.spec.selector;
    expect(schemaErrors(missing).join("\n")).toBe("DaemonSet: data/spec must have required property selector");
  }, 60_000);

  it("has the DaemonSet flannel's has: hostNetwork, system-node-critical, NoSchedule tolerated, NET_ADMIN and NET_RAW only, the host's /dev/net (TUN, where there is one), the host paths, init containers, probes", () => {
    const pod = ds.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    expect(pod.priorityClassName).toBe("system-node-critical");
    expect(pod.tolerations).toContainEqual({ operator: "Exists", effect: "NoSchedule" });
    const [agent] = pod.containers;
    expect(agent.securityContext).toEqual({
      privileged: false,
      capabilities: { drop: ["ALL"], add: ["NET_ADMIN", "NET_RAW"] },
    });
    const hostPaths = Object.fromEntries(
      pod.volumes.filter((v: Doc) => v.hostPath).map((v: Doc) => [v.hostPath.path, v.hostPath.type]),
    );
    expect(hostPaths).toEqual({
      "/run/flannel": "DirectoryOrCreate",
      "/var/lib/weft": "DirectoryOrCreate",
      "/etc/cni/net.d": "DirectoryOrCreate",
      "/opt/cni/bin": "DirectoryOrCreate",
      // Not /dev/net/tun as a CharDevice: a node without TUN could then run no agent, even for vxlan.
      "/dev/net": "DirectoryOrCreate",
      // The host's xtables lock, as kube-flannel's: iptables in the pod then waits for kube-proxy's.
      "/run/xtables.lock": "FileOrCreate",
    });
    const lock = pod.volumes.find((v: Doc) => v.hostPath?.path === "/run/xtables.lock").name;
    expect(agent.volumeMounts.find((m: Doc) => m.name === lock).mountPath).toBe("/run/xtables.lock");
    const devNet = pod.volumes.find((v: Doc) => v.hostPath?.path === "/dev/net").name;
    expect(agent.volumeMounts.find((m: Doc) => m.name === devNet).mountPath).toBe("/dev/net");
    expect(pod.initContainers.map((c: Doc) => c.name)).toEqual(["install-cni-plugin", "install-cni"]);
    expect(agent.livenessProbe.httpGet.path).toBe("/healthz");
    expect(agent.readinessProbe.httpGet.path).toBe("/readyz");
    const port = Number(agent.env.find((e: Doc) => e.name === "WEFT_HEALTHZ_PORT").value);
    expect([agent.livenessProbe.httpGet.port, agent.readinessProbe.httpGet.port]).toEqual([port, port]);
    // The key's Secret is made apart, so that applying the file again never replaces it; the pod
    // mounts it where WEFT_KEY_FILE points.
    const env = (name: string) => agent.env.find((e: Doc) => e.name === name)?.value;
    const keyVolume = pod.volumes.find((v: Doc) => v.secret);
    expect(keyVolume.secret.secretName).toBe("weft-cluster-key");
    const keyMount = agent.volumeMounts.find((m: Doc) => m.name === keyVolume.name);
    expect(env("WEFT_KEY_FILE")).toBe(`${keyMount.mountPath}/cluster.key`);
    // A rollout restarts agents without a leave and keeps their devices: pod traffic flows on.
    expect(env("WEFT_KEEP_ON_EXIT")).toBe("true");
    // The underlay: the interface holding the node's InternalIP, of either family (--iface takes an
    // IPv6 address too, --public-ip only IPv4, which an IPv6-only cluster's hostIP is not).
    expect(agent.env.find((e: Doc) => e.name === "WEFT_IFACE")?.valueFrom.fieldRef.fieldPath).toBe("status.hostIP");
    expect(env("WEFT_PUBLIC_IP")).toBeUndefined();
    // Every WEFT_ variable names a flag of `weft agent` (its help says which variable each reads).
    const run = spawnSync(process.execPath, [projectFile("dist", "src", "cli", "main.js"), "agent", "--help"], {
      encoding: "utf8",
    });
    expect(run.status, `weft agent --help (dist/ built? npm run build): ${run.stderr}`).toBe(0);
    const help = run.stdout.replace(/\s+/g, " ");
    for (const e of agent.env) expect(help).toMatch(new RegExp(`(\\(|, )env: ${e.name}\\)`));
  });

  it("has one gossip port, the ConfigMap's gossip-port: the agent reads it, the gossip containerPorts (host ports) and every join address use it", () => {
    const [agent] = ds.spec.template.spec.containers;
    const port = Number(cm.data["gossip-port"]);
    expect(Number.isInteger(port) && port >= 1 && port <= 65535, `gossip-port "${cm.data["gossip-port"]}"`).toBe(true);
    const ref = agent.env.find((e: Doc) => e.name === "WEFT_GOSSIP_PORT")?.valueFrom?.configMapKeyRef;
    expect(ref).toEqual({ name: cm.metadata.name, key: "gossip-port" });
    const gossip = agent.ports.filter((p: Doc) => p.name.startsWith("gossip"));
    expect(gossip.map((p: Doc) => `${p.protocol}/${p.containerPort}`).sort()).toEqual([`TCP/${port}`, `UDP/${port}`]);
    const joins: string[] = cm.data.join.split(",");
    expect(joins.map((a) => Number(a.slice(a.lastIndexOf(":") + 1)))).toEqual(joins.map(() => port));
  });

  it("declares the ports it serves on, and points the agent's paths into the volumes that hold them", () => {
    const pod = ds.spec.template.spec;
    const [agent] = pod.containers;
    const env = (name: string) => agent.env.find((e: Doc) => e.name === name)?.value;
    const declared = (name: string) => agent.ports.find((p: Doc) => p.name === name)?.containerPort;
    // The probes' port is the one declared, which is the one the agent serves on.
    expect(declared("healthz")).toBe(Number(env("WEFT_HEALTHZ_PORT")));
    expect([agent.livenessProbe.httpGet.port, agent.readinessProbe.httpGet.port]).toEqual([
      declared("healthz"),
      declared("healthz"),
    ]);
    expect(declared("metrics")).toBe(Number(env("WEFT_METRICS_PORT")));
    /** The volume holding `path` in the agent's container, and `path` inside it. */
    const volumeOf = (path: string) => {
      const m = agent.volumeMounts.find((m: Doc) => `${path}/`.startsWith(`${m.mountPath.replace(/\/$/, "")}/`));
      expect(m, `${path}: in no volume mount`).toBeDefined();
      return {
        volume: pod.volumes.find((v: Doc) => v.name === m.name),
        rest: path.slice(m.mountPath.replace(/\/$/, "").length),
      };
    };
    // net-conf.json: the ConfigMap's key, as mounted.
    const conf = volumeOf(env("WEFT_NET_CONFIG"));
    expect(conf.volume.configMap?.name).toBe(cm.metadata.name);
    expect(Object.keys(cm.data)).toContain(conf.rest.slice(1));
    // subnet.env where the CNI plugin on the host reads it; the state where it outlives the pod.
    const hostPath = (path: string) => {
      const { volume, rest } = volumeOf(path);
      return `${volume.hostPath?.path}${rest}`;
    };
    expect(hostPath(env("WEFT_SUBNET_FILE"))).toBe(DEFAULT_SUBNET_FILE);
    expect(hostPath(env("WEFT_STATE_DIR"))).toBe("/var/lib/weft");
  });

  it("installs the conflist by a rename over it, so that the runtime never loads it half-written: the ConfigMap's cni-conf.json, no temporary file left", () => {
    const init = ds.spec.template.spec.initContainers.find((c: Doc) => c.name === "install-cni");
    const dir = mkdtempSync(join(tmpdir(), "weft-install-cni-"));
    try {
      // The container's command, run here with its mounts made directories of ours.
      let script = [...init.command, ...init.args].slice(2).join(" ");
      expect(init.command).toEqual(["sh", "-c"]);
      for (const m of init.volumeMounts) script = script.replaceAll(m.mountPath.replace(/\/$/, ""), join(dir, m.name));
      const netD = join(dir, "cni");
      mkdirSync(netD);
      mkdirSync(join(dir, "weft-cfg"));
      writeFileSync(join(dir, "weft-cfg", "cni-conf.json"), cm.data["cni-conf.json"]);
      writeFileSync(join(netD, "10-flannel.conflist"), "{}");
      const before = statSync(join(netD, "10-flannel.conflist")).ino;
      const r = spawnSync("sh", ["-c", script], { encoding: "utf8" });
      expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: "" });
      expect(readFileSync(join(netD, "10-flannel.conflist"), "utf8")).toBe(cm.data["cni-conf.json"]);
      // A new file renamed over the old one (cp -f writes into the old one, in place).
      expect(statSync(join(netD, "10-flannel.conflist")).ino).not.toBe(before);
      expect(readdirSync(netD)).toEqual(["10-flannel.conflist"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("names one image, by a registry host (a bare name is pulled from Docker Hub) and a placeholder tag, that README.md's sed line replaces with the build's commit", () => {
    const containers = (d: Doc) => [...d.spec.template.spec.initContainers, ...d.spec.template.spec.containers];
    const images = (d: Doc) => containers(d).map((c: Doc) => c.image);
    // Not the version's tag, which every build shares (under IfNotPresent a node kept the build it had).
    expect(images(ds)).toEqual(Array(3).fill("registry.example.com/weft:COMMIT"));
    expect(containers(ds).map((c: Doc) => c.imagePullPolicy)).toEqual(Array(3).fill("IfNotPresent"));
    const sed = readFileSync(projectFile("README.md"), "utf8")
      .split("\n")
      .filter((l) => l.startsWith("sed ") && l.endsWith(" | kubectl apply -f -"));
    expect(sed).toHaveLength(1);
    const dir = mkdtempSync(join(tmpdir(), "weft-manifest-"));
    try {
      // The manifest as the line applies it, a first build's and then an upgrade's (run again on
      // the same file): the file keeps its placeholder, so each names its own build.
      const file = join(dir, "weft.yaml");
      const original = readFileSync(projectFile("deploy", "kubernetes", "weft.yaml"), "utf8");
      writeFileSync(file, original);
      const line = sed[0].replace("deploy/kubernetes/weft.yaml", file).replace(/ \| kubectl apply -f -$/, "");
      for (const commit of ["0123abc", "4567def"]) {
        const r = spawnSync("sh", ["-c", line], {
          env: { ...process.env, REGISTRY: "registry.test:5000/infra", COMMIT: commit },
          encoding: "utf8",
        });
        expect(r.stderr).toBe("");
        const applied = load(r.stdout).find((d) => d.kind === "DaemonSet")!;
        expect(images(applied)).toEqual(Array(3).fill(`registry.test:5000/infra/weft:${commit}`));
      }
      expect(readFileSync(file, "utf8")).toBe(original);
      // Upgrading's `set image` names every container (the init containers install the CNI plugin).
      const setImage = `kubectl -n ${ds.metadata.namespace} set image ds/${ds.metadata.name} ${containers(ds)
        .map((c: Doc) => `${c.name}=$IMG`)
        .join(" ")}\``;
      expect(readFileSync(projectFile("README.md"), "utf8")).toContain(setImage);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("carries kube-flannel's cni-conf.json and a net-conf.json that weft's own schemas accept", () => {
    const list = JSON.parse(cm.data["cni-conf.json"]);
    expect(list.plugins.map((p: Doc) => p.type)).toEqual(["flannel", "portmap"]);
    expect(() =>
      parseNetConf(JSON.stringify({ ...list.plugins[0], name: list.name, cniVersion: list.cniVersion })),
    ).not.toThrow();
    expect(parseFlannelNetConf(cm.data["net-conf.json"]).Backend.Type).toBe("vxlan");
    expect(cm.data.join.split(",").every((a: string) => /^[^:]+:\d+$/.test(a))).toBe(true);
  });
});
