// The agent's gossip keys: its key file, read at start and again on every SIGHUP from the process's
// start on. A node that cannot join because its keys are wrong (restarted with the key file of
// before a rotation) is fixed by its file and a SIGHUP while it still starts: the net-conf.json
// reload waits for the start, the key file's must not (the control plane hears of new keys, and its
// join starts a round at once: Joiner.keysChanged).
import type { Logger } from "pino";
import { Keyring, readKeyFile } from "../control/gossip/keyring.js";
import type { WeftError } from "../errors.js";
import { SerialQueue } from "../util/serial.js";

export class AgentKeys {
  private keyring?: Keyring;
  /** Reads one at a time: a slow read never lands after a later one. */
  private readonly reads = new SerialQueue();

  constructor(
    private readonly path: string,
    private readonly log: Logger,
  ) {}

  /** The first read (the agent's start); throws as readKeyFile does. */
  load(): Promise<Keyring> {
    return this.reads.run(async () => {
      this.keyring = await Keyring.fromKeyFile(this.path);
      return this.keyring;
    });
  }

  /**
   * Makes the keyring what the key file says: every key listed installed, the first sealing, the
   * rest removed (README: rotating keys). A file refused leaves the keys in force, and is logged
   * under its error's code. Before the first read nothing is in force: that read is the file as
   * it is now.
   */
  reload(): void {
    void this.reads.run(async () => {
      const keyring = this.keyring;
      if (!keyring) return;
      const before = keyring.ids();
      let thrown: unknown[];
      try {
        thrown = keyring.replace(await readKeyFile(this.path));
      } catch (err) {
        this.log.error(
          // Always a weft code: readKeyFile wraps every failure, the keyring refuses a bad set whole.
          { err, code: (err as WeftError).code, keyIds: before },
          `key file ${this.path} not reloaded; the keys in force stay (primary ${before.primary}): fix what err says and send SIGHUP again`,
        );
        return;
      }
      const after = keyring.ids();
      this.log.info(
        {
          code: "AGENT_KEYS_RELOADED",
          keyIds: after,
          added: after.installed.filter((id) => !before.installed.includes(id)),
          removed: before.installed.filter((id) => !after.installed.includes(id)),
        },
        `key file ${this.path} read again: sealing with key id ${after.primary}, opening with ${after.installed.join(", ")}`,
      );
      for (const err of thrown) {
        this.log.error(
          { err, code: "AGENT_KEYS_LISTENER_FAILED", keyIds: after },
          `the keys of key file ${this.path} are in force, but telling the control plane of them failed: a join waiting out its backoff tries them only at its next round`,
        );
      }
    });
  }
}
