import type { StoreHandle } from '../store/store-handle.js';
import type { DiskRepo } from '../store/repos/disk-repo.js';
import { ReplicaRepo } from '../store/repos/replica-repo.js';
import type { ReplicationRecord } from '../store/records/replica-record.js';
import type { VmSupervisor } from '../vms/vm-supervisor.js';
import type { SitePeers } from '../sites/site-peers.js';
import type { SitePaths } from '../core/site-paths.js';
import type { Logger } from '../core/logger.js';
import type { CycleSource, RemoteReplica } from './replication-cycle.js';
import { CYCLE_STREAM_PROTOCOL, type CycleTarget } from './replica-cycle-server.js';
import type { ReplicaPointView } from './replica-service.js';
import { guestFreezeHooks } from './guest-freeze.js';
import { seedSides, type SeedDelta, type SeedSide } from './seed-delta.js';

/**
 * The two ends of one replication cycle as CycleRunner hands them to the cycle: the
 * VM's disks here (a running QEMU, or its stopped images), the replica at the peer (its
 * site-to-site API), and for the first cycle of a reprotect what each side wrote since the
 * point the VM started from.
 */
export class CycleEnds {
  readonly #replicas: ReplicaRepo;
  readonly #disks: DiskRepo;
  readonly #supervisor: VmSupervisor;
  readonly #peers: SitePeers;
  readonly #paths: SitePaths;
  readonly #log: Logger;

  constructor(deps: {
    db: StoreHandle;
    disks: DiskRepo;
    supervisor: VmSupervisor;
    peers: SitePeers;
    paths: SitePaths;
    log: Logger;
  }) {
    this.#replicas = new ReplicaRepo(deps.db);
    this.#disks = deps.disks;
    this.#supervisor = deps.supervisor;
    this.#peers = deps.peers;
    this.#paths = deps.paths;
    this.#log = deps.log;
  }

  async source(vmId: string, diskIds: string[], guestAgent: boolean): Promise<CycleSource> {
    const qmp = this.#supervisor.qmpOf(vmId);
    if (qmp) {
      const nodes = diskIds.map((_, i) => `disk${i}`);
      return guestAgent
        ? { kind: 'live', qmp, nodes, guest: guestFreezeHooks(this.#paths.vmRuntime(vmId).guestAgentSocket) }
        : { kind: 'live', qmp, nodes };
    }
    const disks = await this.#disks.byIds(diskIds);
    return {
      kind: 'offline',
      disks: diskIds.map((id, i) => {
        const d = disks.find((x) => x.id === id)!;
        return {
          id: `disk${i}`,
          layers: [
            { file: d.path, format: d.format },
            ...d.overlays.map((file) => ({ file, format: 'qcow2' as const })),
          ],
        };
      }),
    };
  }

  /**
   * The first cycle of a reprotect (generation 0: the replica is seeded with this VM's old
   * disks at the peer). A VM made here from a replica point started from that point, and the
   * old disks may hold writes made after it (a disaster): the peer says which blocks, or
   * that it cannot tell (seed-delta.ts). A VM that came by live migration started from the
   * old disks themselves: its bitmap alone is the difference.
   */
  async seedSides(row: ReplicationRecord, disks: number): Promise<SeedSide[] | null> {
    const rec = await this.#replicas.recoveredFromPointTime(row.vmId);
    if (!rec) return null;
    // Made from a point no longer on record: when it was is unknown, so the old side's writes are too.
    if (rec.time === null)
      return Array.from({ length: disks }, (): SeedSide => ({
        kind: 'checksums',
        reason: 'the point the VM started from is no longer on record',
      }));
    const peer = await this.#peers.client(row.peer, { timeoutMs: 60_000 });
    // A peer that cannot answer (an older version, a lost file) is a seed of unknown writes: checksums.
    const delta = await peer
      .request<{ delta: SeedDelta | null }>('GET', `/replicas/${row.replicaId}/seed-delta`)
      .then((r) => r.delta)
      .catch((e: unknown) => {
        this.#log.warn(
          { vm: row.vmId, err: (e as Error).message },
          'the peer did not say what its old disks wrote after the point; comparing checksums for them',
        );
        return null;
      });
    return seedSides(delta, rec.time, disks);
  }

  async remote(row: ReplicationRecord): Promise<RemoteReplica> {
    const peer = await this.#peers.client(row.peer, { timeoutMs: 60_000 });
    const base = `/replicas/${row.replicaId}`;
    return {
      beginCycle: () => peer.request<CycleTarget>('POST', `${base}/cycles`, {}),
      commitCycle: (cycleId, meta) => peer.request<ReplicaPointView>('POST', `${base}/cycles/${cycleId}/commit`, meta),
      // Best effort and quick: on a cut link the peer discards staging at its next cycle anyway.
      abortCycle: async () => void (await peer.request('POST', `${base}/cycles/abort`, {}, { timeoutMs: 10_000 })),
      // Cut links must fail soon: the stream's TLS and upgrade within the API's deadline.
      openStream: (cycleId, disk) =>
        peer.openStream(`${base}/cycles/${cycleId}/disks/${disk}/stream`, CYCLE_STREAM_PROTOCOL, { timeoutMs: 20_000 }),
      checksums: async (cycleId, disk, range, chunkSize) =>
        Buffer.from(
          (
            await peer.request<{ digests: string }>('POST', `${base}/cycles/${cycleId}/checksums`, {
              disk,
              offset: range.offset,
              length: range.length,
              chunkSize,
            })
          ).digests,
          'base64',
        ),
    };
  }
}
