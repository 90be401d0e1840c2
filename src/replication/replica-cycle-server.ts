import { join, resolve, sep } from 'node:path';
import type { ChainLayer, PointMerge, ReplicaChain, StagingCycle } from './replica-chain.js';
import { offlineMerge } from './chain-images.js';
import { isMamoriError } from '../core/mamori-error.js';
import { NbdClient } from '../nbd/nbd-client.js';
import { chunkDigests } from './block-checksums.js';
import type { ByteRange } from '../nbd/extent-copy.js';
import { StorageDaemon } from '../qemu/storage-daemon.js';
import { newShortId } from '../core/ids.js';
import { MamoriError } from '../core/mamori-error.js';
import type { Logger } from '../core/logger.js';
import type { Socket } from 'node:net';
import { StagingDaemon, type StagingSet } from './staging-daemon.js';

/** The protocol a cycle's stream upgrades the API connection to: NBD, inside its TLS. */
export const CYCLE_STREAM_PROTOCOL = 'mamori-nbd';

/**
 * Where the source site writes a cycle: per disk, the staging daemon's export, reached through
 * the site API (GET /replicas/ID/cycles/CYCLE/disks/N/stream, upgraded: api/cycle-streams.ts).
 */
export interface CycleTarget {
  cycleId: string;
  /** NBD export name per disk index. */
  exports: string[];
}

interface OpenCycle {
  id: string;
  set: StagingSet;
  chains: ReplicaChain[];
  /** Each disk's layers below staging (the newest point), for checksums. */
  parents: ChainLayer[][];
  /** Read-only daemon over the parents, started by the first checksum request of a resync. */
  reader: StorageDaemon | null;
  /** The source's NBD streams into this cycle: cut when the cycle ends. */
  streams: Set<Socket>;
}

/**
 * The open cycles of the replicas: their staging overlays, exported writable by the site's one
 * long-lived staging daemon (staging-daemon.ts), and the source site's streams into them; and,
 * for a resync, a read-only daemon over the newest point for checksums, in the replica's
 * folder (pid file, QMP socket), so one left by a killed server is found and killed.
 * Callers hold the replica's lock (ReplicaService): this class does not serialise.
 */
export class ReplicaCycleServer {
  #root: string;
  #log: Logger;
  #staging: StagingDaemon;
  #cycles = new Map<string, OpenCycle>();

  constructor(deps: { root: string; stagingDir: string; log: Logger }) {
    this.#root = deps.root;
    this.#log = deps.log;
    this.#staging = new StagingDaemon({ dir: deps.stagingDir, log: deps.log });
  }

  isOpen(id: string): boolean {
    return this.#cycles.has(id);
  }

  /** Opens staging on every chain and exports it on the staging daemon. */
  async serve(id: string, chains: ReplicaChain[]): Promise<CycleTarget> {
    const staging: StagingCycle[] = [];
    try {
      for (const c of chains) staging.push(await this.#begin(id, c));
      const set = await this.#staging.open(
        staging.map((st, i) => ({
          key: chains[i]!.dir,
          lower: st.layers.slice(0, -1),
          staging: { file: st.file, backing: st.backing, sizeBytes: chains[i]!.virtualSize },
        })),
      );
      const cycleId = newShortId('cyc');
      this.#cycles.set(id, {
        id: cycleId,
        set,
        chains,
        parents: staging.map((st) => st.layers.slice(0, -1)),
        reader: null,
        streams: new Set(),
      });
      return { cycleId, exports: set.exports };
    } catch (e) {
      for (const c of chains) await c.discardCycle().catch(() => undefined);
      throw e;
    }
  }

  /**
   * A chain's cycle begins by sweeping what cut cycles and merges left: a point file the
   * manifest no longer lists may still be open in the staging daemon (a merge cut after its
   * manifest was written), which the sweep refuses to delete under it. Closed, and once more.
   */
  async #begin(id: string, chain: ReplicaChain): Promise<StagingCycle> {
    try {
      return await chain.beginCycle({ create: false });
    } catch (e) {
      if (!isMamoriError(e, 'DISK_IN_USE') || this.#staging.residentKeys(chain.dir).length === 0) throw e;
      await this.release(id);
      return chain.beginCycle({ create: false });
    }
  }

  /**
   * Retention's merge: inside the staging daemon when it holds the chain open (no process, and
   * the daemon's locks would refuse qemu-img), by qemu-img otherwise.
   */
  readonly pointMerge: PointMerge = async (step) => {
    if (await this.#staging.merge(step.dir, [...step.layers], step.baseName)) return;
    await offlineMerge(step);
  };

  /**
   * Closes a replica's chains in the staging daemon, where they stay open between cycles: before
   * anything else writes or deletes its files (compaction, deletion, promotion).
   */
  async release(id: string): Promise<void> {
    await this.#staging.release(this.#staging.residentKeys(resolve(this.#root, id) + sep));
  }

  /**
   * Where a stream of the source into a disk of the open cycle goes (the upgrade route checks
   * the caller owns the replica); `track` ties the connection to the cycle, which cuts it at its end.
   */
  stream(
    id: string,
    cycleId: string,
    disk: number,
  ): { socketPath: string; exportName: string; track(s: Socket): void } {
    const open = this.#open(id, cycleId);
    const exportName = open.set.exports[disk];
    if (exportName === undefined)
      throw new MamoriError('OUT_OF_RANGE', `replica ${id} has no disk ${disk}`, { details: { disk } });
    return {
      socketPath: this.#staging.socketPath,
      exportName,
      track: (s) => {
        if (this.#cycles.get(id) !== open) return void s.destroy();
        open.streams.add(s);
        s.once('close', () => open.streams.delete(s));
      },
    };
  }

  /**
   * Ends the serving of a cycle before its commit and hands back its chains, staging still on
   * top: the streams are cut (the source flushed before it asked to commit) and the daemon
   * closes the overlays, which writes their qcow2 metadata.
   */
  async end(id: string, cycleId: string): Promise<ReplicaChain[]> {
    const open = this.#open(id, cycleId);
    this.#cycles.delete(id);
    for (const s of open.streams) s.destroy();
    await this.#staging.close(open.set, 'hard');
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
      for (const st of open.streams) st.destroy();
      await this.#staging.close(open.set, 'hard').catch(() => undefined);
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
    // Before the staging daemon, each cycle had a daemon of its own here.
    if (await StorageDaemon.killLeftover(this.#daemonFiles(id))) {
      this.#log.warn({ replica: id }, 'killed the storage daemon of a cycle cut by a server restart');
    }
  }

  /** At server start, before the replicas' repair: the staging daemon a killed server left. */
  async killStagingLeftover(): Promise<void> {
    if (await this.#staging.killLeftover())
      this.#log.warn('killed the staging daemon left by a server restart: the cycles it served were cut');
  }

  /** Server shutdown: a cycle in flight is cut; its staging is discarded at the next attempt. */
  async shutdown(): Promise<void> {
    for (const id of [...this.#cycles.keys()]) await this.close(id);
    await this.#staging.stop();
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
