// Exact UDP between two pods, sent as a pod's kernel sends UDP_SEGMENT trains: each send is one
// USO super-packet on the sending node's TUN device, and on the receiving node the datagrams are
// merged again (a USO write to its TUN device) before the pod's socket takes them one by one.
// Sockets are the addon's, opened in the pods' namespaces; a train is sent only once the previous
// one arrived, so no ring or buffer overflows and every datagram must arrive.
import { withNetns } from "../../src/io/netns.js";
import { UdpSocket } from "../../src/io/udp.js";
import type { LabPod } from "../../src/lab/cluster.js";
import { Slots } from "../io/slots.js";
import { until } from "../io/until.js";

/** Datagram k's bytes: its index, then bytes that vary with it. */
function datagram(k: number, size: number): Uint8Array {
  const d = Uint8Array.from({ length: size }, (_, i) => (k * 31 + i * 7) & 255);
  d[0] = k >> 8;
  d[1] = k & 255;
  return d;
}

export async function udpGsoTransfer(
  from: LabPod,
  to: LabPod,
  trains: number,
  perTrain: number,
  size: number,
): Promise<{ sent: Uint8Array[]; received: Uint8Array[] }> {
  const sender = withNetns(from.ns.name, () => UdpSocket.open({ address: from.addr, port: 0 }));
  const receiver = withNetns(to.ns.name, () => UdpSocket.open({ address: to.addr, port: 0, rcvbuf: 1 << 20 }));
  try {
    const out = new Slots(1, 64 + perTrain * size + 64);
    const into = new Slots(perTrain);
    const sent: Uint8Array[] = [];
    const received: Uint8Array[] = [];
    for (let t = 0; t < trains; t++) {
      const train = Array.from({ length: perTrain }, (_, i) => datagram(t * perTrain + i, size));
      sent.push(...train);
      out.put(0, Uint8Array.from(train.flatMap((d) => Array.from(d))));
      out.set(0, { ADDR: to.addr, PORT: receiver.port, FLAGS: size });
      await until("the train sent", () => (sender.send(out.buf, out.descs, 0, 1) === 1 ? true : undefined));
      let got = 0;
      into.reset();
      await until(`train ${t} received`, () => {
        got += receiver.recv(into.buf, into.descs, got, perTrain - got);
        return got === perTrain ? true : undefined;
      });
      for (let i = 0; i < perTrain; i++) received.push(into.packet(i));
    }
    return { sent, received };
  } finally {
    sender.close();
    receiver.close();
  }
}
