// A bad net-conf.json, flag, key file, state dir or port, and a Network that overlaps the host,
// stop the agent before it leases, binds or touches anything: it exits 1 with one line naming the
// key or flag, the value and what is allowed, and the host's links, addresses, routes, neighbours,
// FDB and nftables ruleset are exactly what they were. Also: flags come from WEFT_<FLAG> variables.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { lstatSync } from "node:fs";
import { chmod, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LAB_GOSSIP_PORT, LabAgents, type LabAgent } from "../../src/lab/agents.js";
import { LabCluster } from "../../src/lab/cluster.js";
import { formatIpv6 } from "../../src/net/ipv6.js";
import { projectFile } from "../../src/paths.js";
import { headLabel } from "../support/checkout.js";
import { canUseNetns } from "../support/netns.js";
import { coded, eventually, kernelState, netConf } from "./support.js";

const run = promisify(execFile);

/** This test's pod network: the lower half of the lab's, so that a host route fits beside it (198.19.128.0/17). */
const NETWORK = "198.19.0.0/17";

/** The lab's IPv6 pod network; the host has a route inside it (2001:2:0:c000::/52), which only the overlap case trips over. */
const NETWORK6 = "2001:2:0:8000::/49";

/** Holds UDP and TCP port 7999 on every address, as another program would. */
const HOLD_PORT = `const u = require("node:dgram").createSocket("udp4"); u.bind(7999, () => require("node:net").createServer().listen(7999, () => console.log("held")));`;

/** What a failed start must not leave in the state dir. */
const STATE_FILES = [
  "lease-state.json",
  "lease-state-ipv6.json",
  "vtep-mac",
  "weft.sock",
  "weft.lock",
  "subnet.env",
  "underlay-ipv6",
  "members.json",
];

describe.skipIf(!canUseNetns())("agent: bad configs and flags", () => {
  let lab: LabCluster;
  let agents: LabAgents;
  let a: LabAgent;
  let holder: ChildProcess;
  let openKey: string;
  let notADir: string;

  beforeAll(async () => {
    lab = await LabCluster.create({ tag: "acf", hosts: 1, ipv6: true });
    agents = await LabAgents.prepare(lab, () => netConf("vxlan", NETWORK));
    a = agents.agents[0];
    // A host route the corpus' Network must not shadow, and another process holding port 7999.
    await a.host.ns.exec(["ip", "route", "add", "198.19.128.0/17", "dev", "eth0"]);
    await a.host.ns.exec(["ip", "-6", "route", "add", "2001:2:0:c000::/52", "dev", "eth0"]);
    const [cmd, ...argv] = a.host.ns.wrap([process.execPath, "-e", HOLD_PORT]);
    holder = spawn(cmd, argv, { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve) => holder.stdout!.once("data", () => resolve()));
    openKey = join(agents.dir, "open.key");
    await writeFile(openKey, await readFile(join(agents.dir, "cluster.key"), "utf8"), { mode: 0o644 });
    await chmod(openKey, 0o644);
    notADir = join(agents.dir, "a-file");
    await writeFile(notADir, "");
  });

  afterAll(async () => {
    holder?.kill();
    await agents?.stopAll();
    await lab?.destroy();
  });

  /** Runs `weft agent` in the host with the lab's flags, then `args` (a later flag wins); resolves with its exit code and output. */
  async function runAgent(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const iface = args.includes("--iface") || args.includes("--iface-regex") ? [] : ["--iface", "eth0"];
    const base = [
      "agent",
      "--net-config",
      agents.netConfPath(a),
      ...iface,
      "--key-file",
      join(agents.dir, "cluster.key"),
      "--state-dir",
      a.dir,
      "--subnet-file",
      join(a.dir, "subnet.env"),
      "--node-name",
      a.host.name,
      "--gossip-port",
      String(LAB_GOSSIP_PORT),
    ];
    const argv = a.host.ns.wrap([process.execPath, projectFile("dist", "src", "cli", "main.js"), ...base, ...args]);
    return run(argv[0], argv.slice(1), { timeout: 30_000, maxBuffer: 1 << 20 }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
  }

  // The corpus: one case a line: what, net-conf.json (object, or raw text), extra flags, the one error line expected.
  it.each<[string, object | string, string[], RegExp]>([
    [
      "an unknown Backend.Type",
      { Network: NETWORK, Backend: { Type: "vxlan2" } },
      [],
      /^weft: \[CONFIG_NET_CONF_INVALID\] \S+net-conf\.json: Backend\.Type is "vxlan2"; valid types are vxlan, host-gw, udp, wasm-vxlan$/,
    ],
    [
      "a Network that is no prefix",
      { Network: "198.19.0.0/33" },
      [],
      /\[CONFIG_NET_CONF_INVALID\] \S+: Network = "198\.19\.0\.0\/33": .*not an IPv4 prefix \(expected address\/length/,
    ],
    [
      "two spellings of one key",
      { Network: NETWORK, network: NETWORK },
      [],
      /^weft: \[CONFIG_NET_CONF_INVALID\] \S+net-conf\.json: "Network" and "network" are both the key Network \(keys match regardless of case, as in flannel\); keep one of them$/,
    ],
    [
      "an unknown top-level key",
      { Network: NETWORK, Backnd: { Type: "udp" } },
      [],
      /net-conf\.json: unknown key\(s\) Backnd; allowed here: Network, SubnetLen, SubnetMin, SubnetMax, EnableIPv4, EnableIPv6, EnableNFTables, IPv6Network, IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax, Backend$/,
    ],
    [
      "a Backend.Type null",
      { Network: NETWORK, Backend: { Type: null, VNI: 2 } },
      [],
      /^weft: \[CONFIG_NET_CONF_INVALID\] \S+net-conf\.json: Backend has no Type; give one of vxlan, host-gw, udp, wasm-vxlan/,
    ],
    [
      "a value out of range",
      { Network: NETWORK, Backend: { Type: "vxlan", VNI: 16777216 } },
      [],
      /: Backend\.VNI = 16777216: .*16777215/,
    ],
    [
      "text that is not JSON",
      "{ Network: ",
      [],
      /^weft: \[CONFIG_NET_CONF_NOT_JSON\] \S+net-conf\.json is not valid JSON: /,
    ],
    [
      "an unknown key in a 10 MB file",
      { Network: NETWORK, Junk: "x".repeat(10_000_000) },
      [],
      /^weft: \[CONFIG_NET_CONF_INVALID\] \S+: unknown key\(s\) Junk; allowed here: Network, SubnetLen, SubnetMin, SubnetMax, EnableIPv4, EnableIPv6, EnableNFTables, IPv6Network, IPv6SubnetLen, IPv6SubnetMin, IPv6SubnetMax, Backend$/,
    ],
    [
      "JSON nested 100000 deep",
      "[".repeat(100_000),
      [],
      /^weft: \[CONFIG_NET_CONF_INVALID\] \S+: values nested 100000 levels deep; .*more than 16 is refused$/,
    ],
    [
      "SubnetMin that is no address",
      { Network: NETWORK, SubnetMin: "banana" },
      [],
      /: SubnetMin = "banana": "banana" is not an IPv4 address/,
    ],
    [
      "SubnetMax that is no address",
      { Network: NETWORK, SubnetMax: "198.19.300.0" },
      [],
      /: SubnetMax = "198\.19\.300\.0": .*not an IPv4 address/,
    ],
    [
      "SubnetLen 33",
      { Network: NETWORK, SubnetLen: 33 },
      [],
      /: network config: SubnetLen 33 must be a whole number no larger than 30/,
    ],
    [
      "SubnetMin outside the Network",
      { Network: NETWORK, SubnetMin: "198.19.128.0" },
      [],
      /: network config: SubnetMin 198\.19\.128\.0 is not inside Network 198\.19\.0\.0\/17$/,
    ],
    [
      "SubnetMin above SubnetMax",
      { Network: NETWORK, SubnetMin: "198.19.9.0", SubnetMax: "198.19.2.0" },
      [],
      /: network config: SubnetMin 198\.19\.9\.0 is above SubnetMax 198\.19\.2\.0$/,
    ],
    [
      "Backend.Workers 0",
      { Network: NETWORK, Backend: { Type: "wasm-vxlan", Workers: 0 } },
      [],
      /: Backend\.Workers = 0: .*>=1/,
    ],
    [
      "Backend.QueuesPerWorker above what a worker's wait can watch",
      { Network: NETWORK, Backend: { Type: "udp", QueuesPerWorker: 15 } },
      [],
      /: Backend\.QueuesPerWorker = 15: .*<=14/,
    ],
    [
      "EnableIPv4 false with nothing else to carry",
      { Network: NETWORK, EnableIPv4: false },
      [],
      /: EnableIPv4 = false: at least one address family must be enabled/,
    ],
    [
      "EnableIPv6 with a backend that cannot carry IPv6",
      { Network: NETWORK, EnableIPv6: true, IPv6Network: "2001:2:0:8000::/49", Backend: { Type: "udp" } },
      [],
      /^weft: \[CONFIG_NET_CONF_INVALID\] \S+: Backend = .*: Backend\.Type udp cannot carry IPv6 \(flannel's udp wire format carries IPv4 packets only\); with EnableIPv6 use one of vxlan, host-gw, wasm-vxlan$/,
    ],
    [
      "EnableIPv6 without IPv6Network",
      { Network: NETWORK, EnableIPv6: true },
      [],
      /: IPv6Network = undefined: EnableIPv6 needs IPv6Network/,
    ],
    [
      "IPv6-only with udp",
      { EnableIPv4: false, EnableIPv6: true, IPv6Network: NETWORK6, Backend: { Type: "udp" } },
      [],
      /\[CONFIG_NET_CONF_INVALID\] .*Backend\.Type udp cannot carry IPv6/,
    ],
    [
      "IPv6-only with an IPv4 join target",
      { EnableIPv4: false, EnableIPv6: true, IPv6Network: NETWORK6 },
      ["--join", "198.18.0.9:7946", "--subnet-seeds", "host1"],
      /^weft: \[CONFIG_FLAG_INVALID\] --join "198\.18\.0\.9:7946": an IPv4 address, but gossip runs over IPv6 here \(EnableIPv4 is false\)/,
    ],
    [
      "an IPv6 join target while gossip runs over IPv4",
      { Network: NETWORK, EnableIPv6: true, IPv6Network: NETWORK6 },
      ["--join", "[2001:2::9]:7946", "--subnet-seeds", "host1"],
      /^weft: \[CONFIG_FLAG_INVALID\] --join "\[2001:2::9\]:7946": an IPv6 address, but gossip runs over IPv4 here/,
    ],
    [
      "an IPv6Network containing the underlay",
      { EnableIPv4: false, EnableIPv6: true, IPv6Network: "2001:2::/48" },
      [],
      /^weft: \[CONFIG_NETWORK_OVERLAPS_HOST\] IPv6Network 2001:2::\/48 \(net-conf\.json\) contains the underlay address 2001:2::b on eth0: .*\(ip -6 addr, ip -6 route\)$/,
    ],
    [
      "an IPv6Network holding a host route",
      { Network: NETWORK, EnableIPv6: true, IPv6Network: NETWORK6 },
      [],
      /^weft: \[CONFIG_NETWORK_OVERLAPS_HOST\] IPv6Network 2001:2:0:8000::\/49 \(net-conf\.json\) overlaps the host's route 2001:2:0:c000::\/52 on eth0: /,
    ],
    [
      "a Network containing the underlay",
      { Network: "198.18.0.0/24", SubnetLen: 28 },
      [],
      /^weft: \[CONFIG_NETWORK_OVERLAPS_HOST\] Network 198\.18\.0\.0\/24 \(net-conf\.json\) contains the underlay address 198\.18\.0\.\d+ on eth0: /,
    ],
    [
      "a Network inside a host route",
      { Network: "198.19.192.0/20" },
      [],
      /^weft: \[CONFIG_NETWORK_OVERLAPS_HOST\] Network 198\.19\.192\.0\/20 \(net-conf\.json\) overlaps the host's route 198\.19\.128\.0\/17 on eth0: /,
    ],
    [
      "a Network containing a host route",
      { Network: "198.19.128.0/17" },
      [],
      /\[CONFIG_NETWORK_OVERLAPS_HOST\] Network 198\.19\.128\.0\/17 \(net-conf\.json\) overlaps the host's route 198\.19\.128\.0\/17 on eth0/,
    ],
    ["Backend.Port 0", { Network: NETWORK, Backend: { Type: "udp", Port: 0 } }, [], /: Backend\.Port = 0: .*1/],
    [
      "Backend.Port 70000",
      { Network: NETWORK, Backend: { Type: "wasm-vxlan", Port: 70000 } },
      [],
      /: Backend\.Port = 70000: .*65535/,
    ],
    [
      "--gossip-port 70000",
      { Network: NETWORK },
      ["--gossip-port", "70000"],
      /^weft: \[CONFIG_FLAG_INVALID\] --gossip-port 70000: a port is a whole number in 1\.\.65535$/,
    ],
    [
      "--keep-on-exit=maybe (a switch takes true or false, as flanneld's)",
      { Network: NETWORK },
      ["--keep-on-exit=maybe"],
      /^weft: \[CLI_BAD_BOOLEAN\] --keep-on-exit "maybe" \(or WEFT_KEEP_ON_EXIT\): use 1, t, true for on or 0, f, false for off \(any case\)$/,
    ],
    [
      "--metrics-port abc",
      { Network: NETWORK },
      ["--metrics-port", "abc"],
      /^weft: \[CLI_BAD_NUMBER\] --metrics-port "abc" \(or WEFT_METRICS_PORT\): not a whole number$/,
    ],
    [
      "Backend.Port on the gossip port",
      { Network: NETWORK, Backend: { Type: "wasm-vxlan", Port: 7946 } },
      [],
      /^weft: \[CONFIG_PORT_CONFLICT\] --gossip-port 7946 and Backend\.Port \(net-conf\.json\) 7946 both need UDP port 7946: give each its own port$/,
    ],
    [
      "vxlan Backend.Port on the gossip port",
      { Network: NETWORK, Backend: { Type: "vxlan", Port: 7946 } },
      [],
      /\[CONFIG_PORT_CONFLICT\] --gossip-port 7946 and Backend\.Port \(net-conf\.json\) 7946 both need UDP port 7946/,
    ],
    [
      "--healthz-port on the gossip port",
      { Network: NETWORK },
      ["--healthz-port", "7946"],
      /\[CONFIG_PORT_CONFLICT\] --gossip-port 7946 and --healthz-port 7946 both need TCP port 7946/,
    ],
    [
      "--metrics-port on the --healthz-port",
      { Network: NETWORK },
      ["--healthz-port", "9100", "--metrics-port", "9100"],
      /\[CONFIG_PORT_CONFLICT\] --healthz-port 9100 and --metrics-port 9100 both need TCP port 9100/,
    ],
    [
      "--gossip-port held by another process",
      { Network: NETWORK },
      ["--gossip-port", "7999"],
      /^weft: \[CONFIG_PORT_IN_USE\] --gossip-port 7999: UDP 198\.18\.0\.\d+:7999 is already in use by another process .*set --gossip-port to a free port$/,
    ],
    [
      "Backend.Port held by another process",
      { Network: NETWORK, Backend: { Type: "udp", Port: 7999 } },
      [],
      /\[CONFIG_PORT_IN_USE\] Backend\.Port \(net-conf\.json\) 7999: UDP 198\.18\.0\.\d+:7999 is already in use/,
    ],
    [
      "--metrics-port held by another process",
      { Network: NETWORK },
      ["--metrics-port", "7999", "--metrics-ip", "0.0.0.0"],
      /\[CONFIG_PORT_IN_USE\] --metrics-port 7999: TCP 0\.0\.0\.0:7999 is already in use/,
    ],
    [
      "--public-ip not on the host",
      { Network: NETWORK },
      ["--public-ip", "198.18.0.250"],
      /^weft: \[CONFIG_ADDRESS_NOT_LOCAL\] --public-ip 198\.18\.0\.250: not an address of this host[^;]*; use one of the host's own addresses \(ip -4 addr\)$/,
    ],
    [
      "--healthz-ip not on the host",
      { Network: NETWORK },
      ["--healthz-port", "9101", "--healthz-ip", "198.18.0.251"],
      /\[CONFIG_ADDRESS_NOT_LOCAL\] --healthz-ip 198\.18\.0\.251: not an address of this host/,
    ],
    [
      "--public-ip that is no address",
      { Network: NETWORK },
      ["--public-ip", "198.18.0"],
      /^weft: \[CONFIG_FLAG_INVALID\] --public-ip "198\.18\.0": an IPv4 address of this host, like 198\.18\.0\.1$/,
    ],
    [
      "--public-ip that peers cannot send to (unspecified)",
      { Network: NETWORK },
      ["--public-ip", "0.0.0.0"],
      /^weft: \[CONFIG_FLAG_INVALID\] --public-ip "0\.0\.0\.0": a global unicast IPv4 address of this host, like 198\.18\.0\.1 \(peers cannot send to an unspecified, loopback, link-local, multicast or broadcast one\)$/,
    ],
    [
      "--public-ipv6 link-local",
      { Network: NETWORK },
      ["--public-ipv6", "fe80::1"],
      /^weft: \[CONFIG_FLAG_INVALID\] --public-ipv6 "fe80::1": a global unicast IPv6 address of this host, like 2001:2::1 \(peers cannot send to an unspecified, loopback, link-local or multicast one\)$/,
    ],
    [
      "--public-ipv6 IPv4-mapped",
      { Network: NETWORK },
      ["--public-ipv6", "::ffff:198.18.0.1"],
      /^weft: \[CONFIG_FLAG_INVALID\] --public-ipv6 "::ffff:198\.18\.0\.1": an IPv4-mapped address, which is IPv4 on the wire: give it as --public-ip 198\.18\.0\.1, or give a global unicast IPv6 address of this host$/,
    ],
    [
      "--metrics-ip that is no address",
      { Network: NETWORK },
      ["--metrics-ip", "localhost"],
      /\[CONFIG_FLAG_INVALID\] --metrics-ip "localhost": an address of this host, IPv4 or IPv6/,
    ],
    [
      "--iface-regex that is no regex",
      { Network: NETWORK },
      ["--iface-regex", "eth("],
      /^weft: \[CONFIG_FLAG_INVALID\] --iface-regex "eth\(": a JavaScript regular expression over interface names and addresses, or one led by Go's \(\?i\) \(/,
    ],
    [
      "--iface that matches nothing",
      { Network: NETWORK },
      ["--iface", "eth9"],
      /^weft: \[AGENT_UNDERLAY_NOT_FOUND\] no interface with a global IPv4 address matches --iface eth9; interfaces here: .*eth0 \[198\.18\.0\.\d+ 2001:2::b\]/,
    ],
    [
      "--iface-regex that matches nothing",
      { Network: NETWORK },
      ["--iface-regex", "^wlan"],
      /\[AGENT_UNDERLAY_NOT_FOUND\] no interface with a global IPv4 address matches --iface-regex \^wlan; interfaces here: /,
    ],
    [
      "an empty --node-name",
      { Network: NETWORK },
      ["--node-name", ""],
      /^weft: \[CONFIG_FLAG_INVALID\] --node-name "": 1\.\.128 bytes without spaces or control characters/,
    ],
    [
      "a --node-name of 200 bytes",
      { Network: NETWORK },
      ["--node-name", "n".repeat(200)],
      /\[CONFIG_FLAG_INVALID\] --node-name "n{200}": 1\.\.128 bytes/,
    ],
    [
      "--join without --subnet-seeds",
      { Network: NETWORK },
      ["--join", "198.18.0.9:7946"],
      /^weft: \[CONFIG_FLAG_INVALID\] --join 198\.18\.0\.9:7946 needs --subnet-seeds: the initial owners of the subnet space/,
    ],
    [
      "--join that is not host:port",
      { Network: NETWORK },
      ["--join", "198.18.0.9"],
      /^weft: \[CLI_BAD_ADDRESS\] --join "198\.18\.0\.9": not host:port/,
    ],
    [
      "--join to port 0",
      { Network: NETWORK },
      ["--join", "198.18.0.9:0", "--subnet-seeds", "host0"],
      /\[CONFIG_FLAG_INVALID\] --join "198\.18\.0\.9:0": each address is host:port with a port in 1\.\.65535/,
    ],
    [
      "--reconcile-interval 0",
      { Network: NETWORK },
      ["--reconcile-interval", "0"],
      /^weft: \[CONFIG_FLAG_INVALID\] --reconcile-interval 0: 1 to 2147483 seconds/,
    ],
    [
      // Node fires a longer timer at once: reconcile ran every millisecond.
      "--reconcile-interval past Node's longest timer",
      { Network: NETWORK },
      ["--reconcile-interval", "2147484"],
      /^weft: \[CONFIG_FLAG_INVALID\] --reconcile-interval 2147484: 1 to 2147483 seconds/,
    ],
    [
      // A seed no node can be named never comes up, and its share of the ring stays unused for good.
      "a --subnet-seeds name no node can have",
      { Network: NETWORK },
      ["--join", "198.18.0.9:7946", "--subnet-seeds", "host1,host 2"],
      /^weft: \[CONFIG_FLAG_INVALID\] --subnet-seeds "host1,host 2": a comma-separated list of node names \(as --node-name takes them: no spaces\)/,
    ],
    [
      // "a, b" (a ConfigMap's habit) is a and b; a space was kept in the name before, and the
      // join target " 198.18.0.10" was looked up in DNS. Here the lists parse, and the start stops
      // only at the port held below.
      "--join and --subnet-seeds with spaces after the commas",
      { Network: NETWORK },
      ["--join", "198.18.0.9:7946, 198.18.0.10:7946", "--subnet-seeds", "host1, host2", "--gossip-port", "7999"],
      /^weft: \[CONFIG_PORT_IN_USE\] --gossip-port 7999: UDP 198\.18\.0\.\d+:7999 is already in use/,
    ],
    [
      // A regex with a comma in it ({m,n}) is one regex: it was split into pieces that match nothing.
      "--iface-regex with a {m,n} quantifier",
      { Network: NETWORK },
      ["--iface-regex", "^eth\\d{0,3}$", "--gossip-port", "7999"],
      /^weft: \[CONFIG_PORT_IN_USE\] --gossip-port 7999: UDP 198\.18\.0\.\d+:7999 is already in use/,
    ],
    // flanneld's flags: the ones weft has no equivalent of, and Go-style ones, say what to use.
    [
      "flanneld's --kube-subnet-mgr",
      { Network: NETWORK },
      ["--kube-subnet-mgr"],
      /^weft: \[CLI_FLANNELD_FLAG\] --kube-subnet-mgr \(flanneld's\): weft never talks to the Kubernetes API server; weft leases node subnets by gossip among its agents: drop it, and give --join .* and --subnet-seeds .*, and set SubnetLen \(IPv6SubnetLen\) in net-conf\.json to kube-controller-manager's --node-cidr-mask-size/,
    ],
    [
      // Named once for both, and without the endpoint's value (it could be a password).
      "flanneld's --etcd-endpoints=... and --etcd-prefix",
      { Network: NETWORK },
      ["--etcd-endpoints=http://198.18.0.9:2379", "--etcd-prefix", "/coreos.com/network"],
      /^(?!.*2379)weft: \[CLI_FLANNELD_FLAG\] --etcd-endpoints, --etcd-prefix \(flanneld's\): weft needs no etcd; .*--join.*, and --net-config a file holding the net-conf\.json kept at <etcd-prefix>\/config$/,
    ],
    [
      "flanneld's --iface-can-reach and --iptables-forward-rules=false",
      { Network: NETWORK },
      ["--iface-can-reach", "198.18.0.9", "--iptables-forward-rules=false"],
      /^weft: \[CLI_FLANNELD_FLAG\] --iface-can-reach \(flanneld's\): .*pass --iface with the interface `ip route get <that address>` names.*; --iptables-forward-rules \(flanneld's\): weft writes no FORWARD rules/,
    ],
    [
      "flanneld's --use-multi-cluster-cidr and --persistent-mac",
      { Network: NETWORK },
      ["--use-multi-cluster-cidr", "--persistent-mac"],
      /^weft: \[CLI_FLANNELD_FLAG\] --use-multi-cluster-cidr \(flanneld's\): weft never talks to the Kubernetes API server, so it reads no ClusterCIDR objects: drop it, .*; --persistent-mac \(flanneld's\): weft keeps the VTEP MAC in --state-dir/,
    ],
    [
      "Go-style flags, one dash (-iface, -ip-masq=true)",
      { Network: NETWORK },
      ["-iface", "eth0", "-ip-masq=true"],
      /^weft: \[CLI_FLANNELD_FLAG\] -iface \(Go-style\): weft's flags take two dashes, write --iface; -ip-masq \(Go-style\): weft's flags take two dashes, write --ip-masq$/,
    ],
    [
      "a group-readable key file",
      { Network: NETWORK },
      ["--key-file", "OPEN_KEY"],
      /^weft: \[GOSSIP_KEY_FILE_EXPOSED\] key file \S+open\.key is readable or writable by group or others \(mode 0644\): run `chmod 600 \S+open\.key`/,
    ],
    [
      "a key file that is a directory",
      { Network: NETWORK },
      ["--key-file", "AGENTS_DIR"],
      /^weft: \[GOSSIP_KEY_FILE_UNREADABLE\] cannot read key file \/\S+: it is a directory; pass the key file itself/,
    ],
    [
      "a missing key file",
      { Network: NETWORK },
      ["--key-file", "/nonexistent/weft.key"],
      /\[GOSSIP_KEY_FILE_UNREADABLE\] cannot read key file \/nonexistent\/weft\.key: ENOENT.*weft keygen/,
    ],
    [
      "a state dir that is a file",
      { Network: NETWORK },
      ["--state-dir", "NOT_A_DIR"],
      /^weft: \[AGENT_STATE_DIR_UNUSABLE\] --state-dir \S+a-file: cannot use it as the state dir/,
    ],
    [
      "a subnet file whose directory is a file",
      { Network: NETWORK },
      ["--subnet-file", "IN_A_FILE"],
      /^weft: \[AGENT_SUBNET_FILE_UNUSABLE\] --subnet-file \S+a-file\/subnet\.env: cannot make its directory \S+a-file \(EEXIST: .*\); pass the path of a file, not a directory, in a directory weft may create and write \(flannel's is \/run\/flannel\/subnet\.env\)$/,
    ],
  ])(
    "%s: exits 1 before starting, with one error naming it, and changes nothing",
    async (_what, conf, extra, message) => {
      const before = await kernelState(a.host);
      await writeFile(agents.netConfPath(a), typeof conf === "string" ? conf : JSON.stringify(conf));
      const args = extra.map((x) =>
        x === "OPEN_KEY"
          ? openKey
          : x === "AGENTS_DIR"
            ? agents.dir
            : x === "NOT_A_DIR"
              ? notADir
              : x === "IN_A_FILE"
                ? join(notADir, "subnet.env")
                : x,
      );
      const r = await runAgent([...args, "--ip-masq"]); // --ip-masq so that an nftables table would show up too
      expect(r.code).toBe(1);
      expect(r.stdout).toBe(""); // not even "starting" was logged
      const lines = r.stderr.trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(message);
      // One error model: a namespaced code, not repeated in the message; never a whole file.
      const [, code, text] = /^weft: \[([A-Z]+_[A-Z0-9_]+)\] (.*)$/.exec(lines[0])!;
      expect(text).not.toContain(code);
      expect(lines[0].length).toBeLessThan(700);
      expect(lines[0]).not.toMatch(/pick another port/);
      expect(await kernelState(a.host)).toEqual(before);
      for (const f of STATE_FILES) expect(lstatSync(join(a.dir, f), { throwIfNoEntry: false }), f).toBeUndefined();
    },
  );
  // Found once the cluster is reached (reading a subnet.env left there, writing the first one):
  // before, Node's own `weft: [EISDIR] EISDIR: illegal operation on a directory, read`.
  it.each([
    [
      "a directory",
      "cannot read it \\(EISDIR: .*\\); pass the path of a file, not a directory, in a directory weft may create and write",
    ],
    [
      "in an immutable directory (chattr +i, refused to root too)",
      "cannot write it \\(EPERM: .*\\); run weft as root, and pass a path in a directory it may create and write",
    ],
  ])("a subnet file %s: exits 1 naming --subnet-file and what to pass, and leaves nothing", async (what, why) => {
    const dir = join(a.dir, "run-flannel");
    await mkdir(dir);
    const immutable = what.startsWith("in an immutable");
    if (immutable) await run("chattr", ["+i", dir]);
    const file = immutable ? join(dir, "subnet.env") : dir;
    try {
      const before = await kernelState(a.host);
      await writeFile(agents.netConfPath(a), JSON.stringify(netConf("vxlan", NETWORK)));
      // A state dir of its own: the lease taken meanwhile is kept in it.
      const r = await runAgent(["--subnet-file", file, "--state-dir", join(a.dir, "subnet-file-state")]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split("\n").at(-1)).toMatch(
        new RegExp(`^weft: \\[AGENT_SUBNET_FILE_UNUSABLE\\] --subnet-file ${file}: ${why}`),
      );
      expect(await kernelState(a.host)).toEqual(before);
      for (const f of ["weft.sock", "weft.lock"])
        expect(lstatSync(join(a.dir, "subnet-file-state", f), { throwIfNoEntry: false }), f).toBeUndefined();
    } finally {
      if (immutable) await run("chattr", ["-i", dir]);
      await rm(dir, { recursive: true, force: true });
      await rm(join(a.dir, "subnet-file-state"), { recursive: true, force: true });
    }
  });

  it("names kube-flannel's /23 node subnet on cni0 as one, with the SubnetLen that fits; with that SubnetLen the agent starts", async () => {
    // What kube-flannel leaves where kube-controller-manager's --node-cidr-mask-size is 23: cni0's
    // gateway and a host-gw route to a peer's /23.
    const ns = a.host.ns;
    await ns.exec(["ip", "link", "add", "cni0", "type", "bridge"]);
    try {
      await ns.exec(["ip", "addr", "add", "198.19.2.1/23", "dev", "cni0"]);
      await ns.exec(["ip", "route", "add", "198.19.4.0/23", "via", "198.18.0.99", "dev", "eth0"]);
      const before = await kernelState(a.host);
      await writeFile(agents.netConfPath(a), JSON.stringify(netConf("vxlan", NETWORK)));
      const r = await runAgent([]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim()).toMatch(
        /^weft: \[CONFIG_NETWORK_OVERLAPS_HOST\] Network 198\.19\.0\.0\/17 \(net-conf\.json\) overlaps the host's address 198\.19\.2\.0\/23 on cni0, a node subnet \/23 where SubnetLen is 24: .*--node-cidr-mask-size.*, set SubnetLen to 23 in net-conf\.json; else pick a Network/,
      );
      expect(await kernelState(a.host)).toEqual(before);
      // As the error says: the agent starts (on a state dir of its own: a lease ring is kept with
      // its subnet length), and its node subnet is a /23.
      await writeFile(agents.netConfPath(a), JSON.stringify({ ...netConf("vxlan", NETWORK), SubnetLen: 23 }));
      a.stateDir = join(a.dir, "state-subnetlen-23");
      agents.start(a, [], []);
      await agents.waitReady(a);
      expect(await readFile(join(a.dir, "subnet.env"), "utf8")).toMatch(/^FLANNEL_SUBNET=198\.19\.\d+\.1\/23$/m);
      await agents.stop(a);
    } finally {
      a.stateDir = a.dir;
      await ns.exec(["ip", "link", "del", "cni0"]);
      await ns.exec(["ip", "route", "del", "198.19.4.0/23"]).catch(() => undefined); // the agent may have removed it
    }
  });

  it("IPv6-only vxlan starts on a Backend.Port another process holds over IPv4 only (the kernel's flannel-v6 socket is IPv6-only)", async () => {
    // The test's other process holds UDP 0.0.0.0:7999, as an IPv4 flannel.1 kept from an earlier config would.
    // The lower half of NETWORK6, clear of the host's route in it.
    await writeFile(
      agents.netConfPath(a),
      JSON.stringify({
        EnableIPv4: false,
        EnableIPv6: true,
        IPv6Network: "2001:2:0:8000::/50",
        Backend: { Type: "vxlan", Port: 7999 },
      }),
    );
    a.stateDir = join(a.dir, "state-ipv6-only-port");
    try {
      agents.start(a, [], []);
      await agents.waitReady(a);
      const link = JSON.parse(await a.host.ns.exec(["ip", "-d", "-j", "link", "show", "flannel-v6.1"])) as Array<{
        linkinfo: { info_data: { port: number } };
      }>;
      expect(link[0]?.linkinfo.info_data.port).toBe(7999);
      expect(holder.exitCode).toBeNull();
    } finally {
      await agents.stop(a);
      a.stateDir = a.dir;
    }
  });

  it("--healthz-port 0 is flanneld's no health server, --metrics-port 0 no metrics port: the agent opens no TCP port but gossip's, /readyz on weft.sock, and says so (AGENT_HEALTHZ_OFF, AGENT_METRICS_OFF)", async () => {
    await writeFile(agents.netConfPath(a), JSON.stringify(netConf("vxlan", NETWORK)));
    const listening = async () =>
      new Set(
        (await a.host.ns.exec(["ss", "-Hltn"]))
          .trim()
          .split("\n")
          .map((l) => l.split(/\s+/)[3]),
      );
    const before = await listening(); // the port the test's other process holds
    const since = await agents.logSize(a);
    agents.start(
      a,
      [
        "--healthz-port",
        "9104",
        "--healthz-port",
        "0",
        "--healthz-status",
        "--metrics-port",
        "9105",
        "--metrics-port",
        "0",
      ],
      [],
    );
    try {
      await agents.waitReady(a); // over weft.sock
      const opened = [...(await listening())].filter((p) => !before.has(p)).map((p) => p.split(":").pop());
      expect(opened).toEqual([String(LAB_GOSSIP_PORT)]);
      // Said, so that a probe failing against the port (a restart loop under the DaemonSet) is explained;
      // a warning, as --healthz-status asked for something that does not happen.
      expect(await coded(a.dir, since, "AGENT_HEALTHZ_OFF")).toEqual([
        expect.objectContaining({
          level: 40,
          msg: expect.stringMatching(
            /HTTP probe against a TCP port .* fails; .*--healthz-status does nothing without it$/,
          ),
        }),
      ]);
      expect(await coded(a.dir, since, "AGENT_METRICS_OFF")).toEqual([
        expect.objectContaining({
          level: 30,
          msg: expect.stringMatching(/--metrics-port unset or 0.* weft\.sock only/),
        }),
      ]);
    } finally {
      await agents.stop(a);
    }
  });

  it("starts with other backends' keys (flannel's wireguard's too) and null strings in net-conf.json, as flanneld does, logs the ignored keys (CONFIG_BACKEND_KEY_IGNORED) at start and at a reload that passes, and refuses a misspelt key", async () => {
    const conf = (backend: object, network = NETWORK) =>
      writeFile(
        agents.netConfPath(a),
        JSON.stringify({ Network: network, IPv6Network: null, Backend: { Type: "host-gw", Name: null, ...backend } }),
      );
    await conf({ VNI: 7, Port: 8472, PSK: "k" });
    const since = await agents.logSize(a);
    agents.start(a, [], []);
    try {
      await agents.waitReady(a);
      expect((await agents.status(a)).settings.backend).toEqual({ Type: "host-gw" });
      const [line, ...more] = await coded(a.dir, since, "CONFIG_BACKEND_KEY_IGNORED");
      expect(more).toEqual([]);
      expect(line).toMatchObject({
        level: 40,
        backend: "host-gw",
        msg: `${agents.netConfPath(a)}: Backend.Type host-gw does not read VNI (a key of vxlan, wasm-vxlan), Port (a key of vxlan, udp, wasm-vxlan), PSK (a key of flannel's wireguard, flannel's ipsec); ignored, as flanneld's host-gw backend ignores them: remove them (host-gw reads no key but Type)`,
      });
      const refusals = (code: string, n: number) =>
        eventually(
          `the reload's ${code}`,
          () => coded(a.dir, since, code),
          (l) => l.length === n,
        );
      // A reload refused after parsing (another Network) says nothing of a config never in force.
      await conf({ VNI: 7 }, "198.19.0.0/18");
      agents.reload(a);
      await refusals("CONFIG_NET_CONF_RELOAD_REFUSED", 1);
      // A misspelt key is refused, as a misspelt top-level one: its default would be left in force.
      await conf({ DirectRoutng: true });
      agents.reload(a);
      const [typo] = await refusals("CONFIG_NET_CONF_INVALID", 1);
      expect((typo.err as { message: string }).message).toMatch(
        /Backend: unknown key\(s\) DirectRoutng, which no backend reads/,
      );
      expect(await coded(a.dir, since, "CONFIG_BACKEND_KEY_IGNORED")).toHaveLength(1);
      // A reload that passes reads the file again, and says it again of what it ignores now.
      await conf({ MTU: 1400 });
      agents.reload(a);
      const lines = await refusals("CONFIG_BACKEND_KEY_IGNORED", 2);
      expect(lines[1].msg).toMatch(/does not read MTU \(a key of vxlan, wasm-vxlan, flannel's wireguard\); ignored/);
      expect(await agents.status(a)).toMatchObject({ ready: true, settings: { backend: { Type: "host-gw" } } });
    } finally {
      await agents.stop(a);
    }
  });

  it("keeps vxlan's MTU when a SIGHUP swaps to wasm-vxlan, which reads it, and refuses vxlan's other keys there (flanneld has no wasm-vxlan to ignore them)", async () => {
    const conf = (Backend: object) => writeFile(agents.netConfPath(a), JSON.stringify({ Network: NETWORK, Backend }));
    const podMtu = async () => (await agents.subnetEnv(a)).text.match(/^FLANNEL_MTU=(\d+)$/m)?.[1];
    await conf({ Type: "vxlan", MTU: 1400 });
    const since = await agents.logSize(a);
    agents.start(a, [], []);
    try {
      await agents.waitReady(a);
      expect(await podMtu()).toBe("1350");
      await conf({ Type: "wasm-vxlan", Workers: 1, MTU: 1400 });
      agents.reload(a);
      await eventually(
        "the swap to wasm-vxlan",
        () => agents.status(a),
        (st) => st.ready && st.settings.backend.Type === "wasm-vxlan",
        15_000,
      );
      expect(await podMtu()).toBe("1350"); // before: the interface's 1500 - 50, pods' packets above the path's
      await conf({ Type: "wasm-vxlan", Workers: 1, MTU: 1400, DirectRouting: true });
      agents.reload(a);
      const [refused] = await eventually(
        "the reload's refusal",
        () => coded(a.dir, since, "CONFIG_NET_CONF_INVALID"),
        (l) => l.length === 1,
      );
      expect((refused.err as { message: string }).message).toMatch(
        /Backend\.Type wasm-vxlan does not read DirectRouting \(a key of vxlan, flannel's ipip\); refused: wasm-vxlan is weft's own Type/,
      );
      expect(await coded(a.dir, since, "CONFIG_BACKEND_KEY_IGNORED")).toEqual([]);
      expect(await agents.status(a)).toMatchObject({
        ready: true,
        settings: { backend: { Type: "wasm-vxlan", MTU: 1400 } },
      });
    } finally {
      await agents.stop(a);
    }
  });

  it("reads a switch's value: WEFT_IP_MASQ=false is off (commander took any value as on), --ip-masq=true on, --net-config-path as flanneld's", async () => {
    const subnetEnv = () => readFile(join(a.dir, "subnet.env"), "utf8");
    await writeFile(agents.netConfPath(a), JSON.stringify(netConf("vxlan", NETWORK)));
    process.env.WEFT_IP_MASQ = "false";
    try {
      // Health on "::" too, as an IPv6-only host's kubelet probes its IPv6 address.
      agents.start(a, ["--healthz-port", "9102", "--healthz-ip", "::"], []);
      await agents.waitReady(a);
    } finally {
      delete process.env.WEFT_IP_MASQ;
    }
    expect(await subnetEnv()).toContain("FLANNEL_IPMASQ=false");
    expect(await a.host.ns.exec(["nft", "list", "tables"])).toBe("");
    const url = `http://[${formatIpv6(a.host.underlayAddr6!)}]:9102/healthz`;
    expect(
      await a.host.ns.exec([
        process.execPath,
        "-e",
        `fetch(${JSON.stringify(url)}).then((r) => console.log(r.status))`,
      ]),
    ).toBe("200\n");
    await agents.stop(a);
    // The lab's --net-config now names a broken file: the start works only by --net-config-path.
    const conf = join(a.dir, "flanneld-conf.json");
    await writeFile(conf, JSON.stringify(netConf("vxlan", NETWORK)));
    await writeFile(agents.netConfPath(a), "{ not json");
    agents.start(a, ["--ip-masq=true", "--net-config-path", conf], []);
    await agents.waitReady(a);
    expect(await subnetEnv()).toContain("FLANNEL_IPMASQ=true");
    expect(await a.host.ns.exec(["nft", "list", "tables"])).toContain("table ip weft");
    await agents.stop(a);
  });

  /** Runs `weft agent` in the host with no flags, `env` beside the test's own environment; resolves with its exit code and output. */
  function runAgentWithEnv(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
    return run(
      "ip",
      ["netns", "exec", a.host.ns.name, process.execPath, projectFile("dist", "src", "cli", "main.js"), "agent"],
      { env: { ...process.env, ...env }, timeout: 20_000 },
    ).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
  }

  /** The lab's key file, state dir and subnet file as WEFT_<FLAG> variables. */
  const labEnv = () => ({
    WEFT_KEY_FILE: join(agents.dir, "cluster.key"),
    WEFT_STATE_DIR: a.dir,
    WEFT_SUBNET_FILE: join(a.dir, "subnet.env"),
  });

  it("takes its flags from WEFT_<FLAG> environment variables", async () => {
    const conf = join(a.dir, "env-conf.json");
    await writeFile(conf, JSON.stringify({ Network: NETWORK, Backend: { Type: "geneve" } }));
    const before = await kernelState(a.host);
    const failed = await runAgentWithEnv({ ...labEnv(), WEFT_NET_CONFIG: conf, WEFT_IFACE: "eth0" });
    expect(failed.code).toBe(1);
    // The message names the file it read, so the variable was used (the default path does not exist here).
    expect(failed.stderr.trim()).toBe(
      `weft: [CONFIG_NET_CONF_INVALID] ${conf}: Backend.Type is "geneve"; valid types are vxlan, host-gw, udp, wasm-vxlan`,
    );
    expect(await kernelState(a.host)).toEqual(before);
  });

  it("answers --version as flanneld does, weft's own and `weft agent`'s: the version and the commit built from", async () => {
    const { version } = JSON.parse(await readFile(projectFile("package.json"), "utf8")) as { version: string };
    for (const args of [["--version"], ["agent", "--version"]]) {
      const r = await run(process.execPath, [projectFile("dist", "src", "cli", "main.js"), ...args]);
      const [, v, commit] = /^(\S+) \((\S+)\)$/.exec(r.stdout.trim()) ?? [];
      expect(v, args.join(" ")).toBe(version);
      expect(commit, args.join(" ")).toMatch(headLabel());
    }
  });

  it("names the FLANNELD_<FLAG> a different WEFT_<FLAG> shadows, takes FLANNELD_HEALTHZ_PORT=0 as unset, and names FLANNELD_<FLAG> in a bad value's error", async () => {
    const conf = join(a.dir, "flanneld-shadow-conf.json");
    await writeFile(conf, JSON.stringify({ Network: NETWORK, Backend: { Type: "geneve" } }));
    const before = await kernelState(a.host);
    // As weft.service and weft.yaml set WEFT_IP_MASQ, beside a migrated FLANNELD_IP_MASQ=false.
    const shadowed = await runAgentWithEnv({
      ...labEnv(),
      WEFT_NET_CONFIG: conf,
      FLANNELD_IP_MASQ: "false",
      WEFT_IP_MASQ: "true",
      FLANNELD_IFACE: "eth0",
      WEFT_IFACE: "eth0",
    });
    expect(shadowed.stderr).toMatch(/^weft: \[CONFIG_NET_CONF_INVALID\] /);
    const warned = shadowed.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { code: string; variable: string; shadowedBy: string; msg: string });
    // The same value twice is no conflict: only FLANNELD_IP_MASQ is named.
    expect(warned.map((w) => [w.code, w.variable, w.shadowedBy])).toEqual([
      ["CLI_FLANNELD_ENV_IGNORED", "FLANNELD_IP_MASQ", "WEFT_IP_MASQ"],
    ]);
    expect(warned[0].msg).toMatch(/^FLANNELD_IP_MASQ is ignored: WEFT_IP_MASQ is set to another value, and wins/);
    // Values are compared by what the flag makes of them: two spellings of one value are no conflict,
    // and only the pair of different values is named.
    for (const [env, named] of [
      [{ IP_MASQ: ["1", "true"], HEALTHZ_PORT: ["9103", "9102"], IFACE: ["eth0, eth1", "eth0,eth1"] }, "HEALTHZ_PORT"],
      [{ IP_MASQ: ["F", "false"], HEALTHZ_PORT: ["09102", "9102"], IFACE: ["eth0", "eth1"] }, "IFACE"],
    ] as const) {
      const pairs = Object.entries(env).flatMap(([f, [flanneld, weft]]) => [
        [`FLANNELD_${f}`, flanneld],
        [`WEFT_${f}`, weft],
      ]);
      const r = await runAgentWithEnv({ ...labEnv(), WEFT_NET_CONFIG: conf, ...Object.fromEntries(pairs) });
      expect(r.stderr).toMatch(/^weft: \[CONFIG_NET_CONF_INVALID\] /);
      const logged = r.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { code: string; variable: string; shadowedBy: string });
      expect(logged.map((w) => [w.code, w.variable, w.shadowedBy])).toEqual([
        ["CLI_FLANNELD_ENV_IGNORED", `FLANNELD_${named}`, `WEFT_${named}`],
      ]);
    }
    // flanneld's own default, 0 (no health server), leaves the agent going: it reaches the underlay.
    await writeFile(conf, JSON.stringify(netConf("vxlan", NETWORK)));
    // "00" too: flanneld reads the number, not the spelling.
    for (const port of ["0", "00"]) {
      const port0 = await runAgentWithEnv({
        ...labEnv(),
        WEFT_NET_CONFIG: conf,
        FLANNELD_HEALTHZ_PORT: port,
        FLANNELD_IFACE: "eth9",
      });
      expect(port0.stderr).toMatch(/^weft: \[AGENT_UNDERLAY_NOT_FOUND\] /);
    }
    for (const [variable, value, code] of [
      ["FLANNELD_IP_MASQ", "yes", "CLI_BAD_BOOLEAN"],
      ["FLANNELD_HEALTHZ_PORT", "x", "CLI_BAD_NUMBER"],
    ]) {
      const bad = await runAgentWithEnv({ ...labEnv(), WEFT_NET_CONFIG: conf, [variable]: value });
      expect(bad.stderr.trim()).toMatch(new RegExp(`^weft: \\[${code}\\] --\\S+ "${value}" \\(or ${variable}\\): `));
    }
    expect(await kernelState(a.host)).toEqual(before);
  });

  it("reads flanneld's FLANNELD_<FLAG> of the flags it shares (WEFT_<FLAG> wins), and logs the others as ignored", async () => {
    const conf = join(a.dir, "flanneld-env-conf.json");
    await writeFile(conf, JSON.stringify({ Network: NETWORK, Backend: { Type: "geneve" } }));
    const before = await kernelState(a.host);
    const flanneld = {
      ...labEnv(),
      FLANNELD_NET_CONFIG_PATH: conf,
      FLANNELD_IFACE: "eth0",
      FLANNELD_KUBE_SUBNET_MGR: "true",
      FLANNELD_ETCD_ENDPOINTS: "http://198.18.0.9:2379",
    };
    const failed = await runAgentWithEnv(flanneld);
    expect(failed.code).toBe(1);
    expect(failed.stderr.trim()).toBe(
      `weft: [CONFIG_NET_CONF_INVALID] ${conf}: Backend.Type is "geneve"; valid types are vxlan, host-gw, udp, wasm-vxlan`,
    );
    const warned = failed.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { code: string; level: number; variable: string; msg: string });
    expect(warned.map((w) => [w.code, w.level, w.variable])).toEqual([
      ["CLI_FLANNELD_ENV_IGNORED", 40, "FLANNELD_KUBE_SUBNET_MGR"],
      ["CLI_FLANNELD_ENV_IGNORED", 40, "FLANNELD_ETCD_ENDPOINTS"],
    ]);
    expect(warned[0].msg).toMatch(
      /^FLANNELD_KUBE_SUBNET_MGR is ignored: weft never talks to the Kubernetes API server; /,
    );
    expect(warned[1].msg).toMatch(/^FLANNELD_ETCD_ENDPOINTS is ignored: weft needs no etcd; /);
    // FLANNELD_IFACE too, with a config that passes: the interface it names is looked for.
    await writeFile(conf, JSON.stringify(netConf("vxlan", NETWORK)));
    const iface = await runAgentWithEnv({ ...labEnv(), FLANNELD_NET_CONFIG_PATH: conf, FLANNELD_IFACE: "eth9" });
    expect(iface.stderr).toMatch(
      /^weft: \[AGENT_UNDERLAY_NOT_FOUND\] no interface with a global IPv4 address matches --iface eth9; /,
    );
    // WEFT_<FLAG> set beside it wins.
    const both = await runAgentWithEnv({ ...flanneld, WEFT_NET_CONFIG: join(a.dir, "missing.json") });
    expect(both.stderr).toMatch(
      /^weft: \[CONFIG_NET_CONF_UNREADABLE\] cannot read the network config \S+missing\.json: ENOENT/,
    );
    expect(await kernelState(a.host)).toEqual(before);
  });
});
