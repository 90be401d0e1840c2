import { join } from 'node:path';
import type { ReplicaDiskSpec } from '../store/records/replica-record.js';
import type { ChainLayer, ReplicaChain } from './replica-chain.js';
import { NbdClient } from '../nbd/nbd-client.js';
import { chunkDigests } from './block-checksums.js';
import type { ByteRange } from '../nbd/extent-copy.js';
import { StorageDaemon } from '../qemu/storage-daemon.js';
import { writeQemuTlsCreds } from '../sites/qemu-tls-creds.js';
import type { SiteTls } from '../sites/site-tls.js';
import { newShortId } from '../core/ids.js';
import { MamoriError } from '../core/mamori-error.js';
import { freePort } from '../core/free-port.js';
import type { Logger } from '../core/logger.js';

/** Where the source site writes a cycle: one NBD export per disk on the recovery site's storage daemon. */
export interface CycleTarget {
  cycleId: string;
  host: string;
  port: number;
  /** NBD export name per disk index. */
  exports: string[];
}

interface OpenCycle {
  id: string;
  daemon: StorageDaemon;
  chains: ReplicaChain[];
  /** Each disk's layers below staging (the newest point), for checksums. */
  parents: ChainLayer[][];
  /** Read-only daemon over the parents, started by the first checksum request of a resync. */
  reader: StorageDaemon | null;
}

/**
 * The storage daemons of the replicas' open cycles: per replica, a writable NBD+TLS server over
 * every disk's staging overlay for the source site's client, and a read-only one over the
 * newest point for the checksums of a resync. One daemon per replica lives in the replica's
 * folder (pid file, QMP socket), so one left by a killed server is found and killed.
 * Callers hold the replica's lock (ReplicaService): this class does not serialise.
 */
export class ReplicaCycleServer {
  #root: string;
  #listenHost: () => string;
  #tls: () => Promise<SiteTls>;
  #log: Logger;
  #cycles = new Map<string, OpenCycle>();

  constructor(deps: { root: string; listenHost: () => string; tls: () => Promise<SiteTls>; log: Logger }) {
    this.#root = deps.root;
    this.#listenHost = deps.listenHost;
    this.#tls = deps.tls;
    this.#log = deps.log;
  }

  isOpen(id: string): boolean {
    return this.#cycles.has(id);
  }

  /** Opens staging on every chain and serves it over NBD+TLS for the peer's client certificate only. */
  async serve(
    id: string,
    disks: ReplicaDiskSpec[],
    chains: ReplicaChain[],
    peer: { caPem: string },
  ): Promise<CycleTarget> {
    const dir = join(this.#root, id);
    const staging = [];
    for (const c of chains) staging.push(await c.beginCycle());
    const site = await this.#tls();
    const tlsDir = await writeQemuTlsCreds({
      dir: join(dir, 'tls'),
      site,
      peerCaPem: peer.caPem,
      endpoint: 'server',
    });
    const host = this.#listenHost();
    const port = await freePort(host);
    const cycleId = newShortId('cyc');
    const exports = disks.map((d) => `disk${d.index}`);
    try {
      const daemon = await StorageDaemon.start({
        ...this.#daemonFiles(id),
        chains: staging.map((s, i) => ({ id: exports[i]!, layers: s.layers })),
        // verify-peer with a CA file holding only this peer's CA (and ours, which QEMU needs to
        // load its own certificate): only the paired site's client certificate gets in.
        nbd: { listen: { type: 'inet', host, port }, tls: { dir: tlsDir, verifyPeer: true } },
        exports: exports.map((name) => ({ id: name, node: name, name, writable: true })),
      });
      this.#cycles.set(id, {
        id: cycleId,
        daemon,
        chains,
        parents: staging.map((st) => st.layers.slice(0, -1)),
        reader: null,
      });
    } catch (e) {
      for (const c of chains) await c.discardCycle().catch(() => undefined);
      throw e;
    }
    return { cycleId, host, port, exports };
  }

  /**
   * Ends the serving of a cycle before its commit and hands back its chains, staging still on
   * top. The writer must be gone before a commit: qemu-img check refuses open images.
   */
  async end(id: string, cycleId: string): Promise<ReplicaChain[]> {
    const open = this.#open(id, cycleId);
    this.#cycles.delete(id);
    await open.daemon.stop();
    if (open.reader) await open.reader.kill();
    return open.chains;
  }

  /**
   * Digests of a span of one disk's newest point (what staging started from), for a source
   * that lost its dirty bitmap: hashed here, next to the data, so only digests cross the link.
   */
  async checksums(
    id: string,
    cycleId: string,
    input: { disk: number; offset: number; length: number; chunkSize: number },
  ): Promise<Buffer> {
    const open = this.#open(id, cycleId);
    const layers = open.parents[input.disk];
    if (layers === undefined)
      throw new MamoriError('OUT_OF_RANGE', `replica ${id} has no disk ${input.disk}`, {
        details: { disk: input.disk },
      });
    if (open.reader === null) {
      const dir = join(this.#root, id);
      open.reader = await StorageDaemon.start({
        ...this.#readerFiles(id),
        chains: open.parents.map((l, i) => ({ id: `point${i}`, layers: l, readOnly: true })),
        nbd: { listen: { type: 'unix', path: join(dir, 'rd-nbd.sock') } },
        exports: open.parents.map((_, i) => ({ id: `point${i}`, node: `point${i}`, name: `point${i}` })),
      });
    }
    const client = await NbdClient.connect(
      { socketPath: join(this.#root, id, 'rd-nbd.sock') },
      { exportName: `point${input.disk}`, metaContexts: ['base:allocation'] },
    );
    try {
      const range: ByteRange = { offset: input.offset, length: input.length };
      return await chunkDigests(client, range, input.chunkSize);
    } finally {
      await client.disconnect().catch(() => undefined);
    }
  }

  /** Cuts the replica's open cycle, if any: its daemons are killed and its staging discarded. */
  async close(id: string): Promise<void> {
    const open = this.#cycles.get(id);
    this.#cycles.delete(id);
    if (open) {
      await open.daemon.kill().catch(() => undefined);
      await open.reader?.kill().catch(() => undefined);
      for (const c of open.chains)
        await c
          .discardCycle()
          .catch((e: unknown) => this.#log.warn({ replica: id, err: e }, 'discarding staging failed'));
    }
  }

  /**
   * A storage daemon outlives a killed site server and keeps the staging image open (and
   * locked); the cycle it served is dead with the server, so it goes, and staging with it.
   */
  async killLeftover(id: string): Promise<void> {
    if (this.#cycles.has(id)) return;
    await StorageDaemon.killLeftover(this.#readerFiles(id));
    if (await StorageDaemon.killLeftover(this.#daemonFiles(id))) {
      this.#log.warn({ replica: id }, 'killed the storage daemon of a cycle cut by a server restart');
    }
  }

  /** Server shutdown: a cycle in flight is cut; its staging is discarded at the next attempt. */
  async shutdown(): Promise<void> {
    for (const id of [...this.#cycles.keys()]) await this.close(id);
  }

  #open(id: string, cycleId: string): OpenCycle {
    const open = this.#cycles.get(id);
    if (!open || open.id !== cycleId)
      throw new MamoriError(
        'VM_INVALID_STATE',
        `cycle ${cycleId} of replica ${id} is not open (it was cut or already ended); start a new one`,
      );
    return open;
  }

  #daemonFiles(id: string): { qmpSocket: string; pidFile: string } {
    const dir = join(this.#root, id);
    return { qmpSocket: join(dir, 'sd-qmp.sock'), pidFile: join(dir, 'sd.pid') };
  }

  #readerFiles(id: string): { qmpSocket: string; pidFile: string } {
    const dir = join(this.#root, id);
    return { qmpSocket: join(dir, 'rd-qmp.sock'), pidFile: join(dir, 'rd.pid') };
  }
}
