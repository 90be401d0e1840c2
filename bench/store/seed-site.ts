/**
 * Fills a site's database with stopped VMs (one disk each), their replications to a peer and,
 * as the recovery site of that peer's VMs, replicas with their points: what a site of that
 * size lists, made through the store's own repositories in a few seconds, no QEMU and no files.
 */
import { storeHandle } from '../../src/store/store-handle.js';
import { join } from 'node:path';
import type { Store } from '../../src/store/store.js';
import type { VmDefinition } from '../../src/store/records/vm-definition.js';
import type { DiskRecord } from '../../src/store/records/disk-record.js';
import type { CycleStats } from '../../src/store/records/replica-record.js';
import { VmRepo } from '../../src/store/repos/vm-repo.js';
import { DiskRepo } from '../../src/store/repos/disk-repo.js';
import { ReplicationRepo } from '../../src/store/repos/replication-repo.js';
import { ReplicaRepo } from '../../src/store/repos/replica-repo.js';
import { newMacAddress, newShortId, newUuid } from '../../src/core/ids.js';

export interface SeedOptions {
  /** VMs made, each replicated, and as many replicas held for the peer. */
  vms: number;
  /** Recovery points per replica (the replication's keep_points, and its replica_points rows). */
  pointsPerReplica: number;
  /** The data folder: disk paths point into its default pool (the files are never made). */
  dataDir: string;
  /** First VM number, so a second seed adds VMs beside the first. */
  from?: number;
}

/** The peer the replications go to; it never answers, since nothing here asks it (replications are paused). */
export const BENCH_PEER = 'bench-peer';
const GiB = 1024 * 1024 * 1024;
/** Minutes between points: the RPO the replications claim; the newest point is a minute old, so none violates it. */
const RPO_MS = 60 * 60_000;
/** The cycles' figures a replication keeps (KEEP_STATS in replication/cycle-runner.ts). */
const KEEP_STATS = 10;
/** VMs per transaction: few commits, and no transaction long enough to matter. */
const BATCH = 50;

/**
 * Seeds `opts.vms` VMs; returns the number of points written. The replications are paused, so
 * the server started over this database arms no cycle and opens no RPO incident.
 */
export async function seedSite(store: Store, opts: SeedOptions): Promise<number> {
  const from = opts.from ?? 0;
  const now = Date.now();
  const iso = (ms: number): string => new Date(ms).toISOString();
  let points = 0;
  for (let b = from; b < from + opts.vms; b += BATCH) {
    await store.db.transaction().execute(async (tx) => {
      const replications = new ReplicationRepo(storeHandle(tx));
      const replicas = new ReplicaRepo(storeHandle(tx));
      for (let i = b; i < Math.min(b + BATCH, from + opts.vms); i++) {
        const name = `bench-${String(i).padStart(4, '0')}`;
        const vmId = newUuid();
        const disk: DiskRecord = {
          id: newShortId('disk'),
          name: `${name}-disk0`,
          pool: 'default',
          kind: 'image',
          format: 'qcow2',
          path: join(opts.dataDir, 'pools', 'default', `${name}-disk0.qcow2`),
          sizeBytes: 8 * GiB,
          rdmMode: null,
          shared: false,
          vmId,
          ownedByVm: true,
          createdAt: iso(now),
          overlays: [],
        };
        const def: VmDefinition = {
          id: vmId,
          name,
          vcpus: 2,
          memoryMiB: 2048,
          firmware: 'uefi',
          machineType: 'pc-q35-9.2',
          diskIds: [disk.id],
          nics: [{ mac: newMacAddress(), model: 'virtio-net-pci', network: 'user' }],
          boot: { kind: 'disk' },
          stopTimeoutSec: 60,
          guestAgent: true,
        };
        await VmRepo.insert(tx, def, iso(now));
        await DiskRepo.insert(tx, disk);

        // Source side: the VM's replication with its last cycles' figures.
        const pointTimes = Array.from(
          { length: opts.pointsPerReplica },
          (_, p) => now - 60_000 - (opts.pointsPerReplica - 1 - p) * RPO_MS,
        );
        const stats: CycleStats[] = pointTimes.slice(-KEEP_STATS).map((t, k) => ({
          at: iso(t),
          mode: k === 0 && opts.pointsPerReplica <= KEEP_STATS ? 'full' : 'incremental',
          bytesSent: 64 * 1024 * 1024,
          bytesChanged: 60 * 1024 * 1024,
          durationMs: 4000,
          throughputBps: 16 * 1024 * 1024,
          replica: {
            points: opts.pointsPerReplica,
            chainLength: opts.pointsPerReplica + 1,
            bytes: 2 * GiB,
            seedBytes: 0,
          },
        }));
        const replicaOfOurs = newUuid();
        await replications.insert({
          vmId,
          peer: BENCH_PEER,
          replicaId: replicaOfOurs,
          rpoMs: RPO_MS,
          keepPoints: opts.pointsPerReplica,
          state: 'paused',
          generation: 1,
          bandwidthBps: null,
          continuous: null,
          createdAt: iso(now),
          updatedAt: iso(now),
        });
        const last = pointTimes.at(-1);
        if (last !== undefined)
          await replications.recordPoint(vmId, {
            generation: opts.pointsPerReplica,
            pointId: `p-${opts.pointsPerReplica - 1}`,
            pointAt: iso(last),
            stats,
          });

        // Recovery side: the peer's VM of the same number, its replica and points.
        const replicaId = newUuid();
        await replicas.insert({
          id: replicaId,
          sourceSite: BENCH_PEER,
          sourceVmId: newUuid(),
          vmName: `peer-${name}`,
          disks: [{ index: 0, sizeBytes: 8 * GiB }],
          keepPoints: opts.pointsPerReplica,
          createdAt: iso(now),
        });
        for (const [p, t] of pointTimes.entries()) {
          await replicas.addPoint(replicaId, {
            pointId: `p-${p}`,
            time: iso(t),
            consistency: p % 4 === 0 ? 'application' : 'crash',
            committedAt: iso(t + 4000),
            diskPoints: [`p-${p}-d0`],
          });
          points += 1;
        }
      }
    });
  }
  return points;
}
