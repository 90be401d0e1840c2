import type { Logger } from '../core/logger.js';
import { readsThroughBacking, startMoveOffExport, streamJobId } from '../cdp/instant-recovery.js';
import { queryImageInfo } from '../qemu/qemu-img-read.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import type { QmpBlockInfo } from '../qemu/qmp-types.js';
import type { ReplicaService } from '../replication/replica-service.js';
import { journalPointTime } from '../replication/replica-service.js';
import type { DiskRecord } from '../disks/disk-record.js';
import type { DiskRepo } from '../store/repos/disk-repo.js';
import type { RecoveredVmRepo } from '../store/repos/recovered-vm-repo.js';
import type { VmRepo } from '../store/repos/vm-repo.js';

/** How often running failovers are looked at: a stream to start, one that ended. */
const WATCH_MS = 2_000;

/*
 * The VMs recovered at a point in time of a journal (instant recovery), after VmRecovery made
 * them on the instant's export:
 * - a failover (planned or disaster) moves off the export while it runs: each of its disks is
 *   streamed into its overlay (cdp/instant-recovery.ts), and once none reads through the export
 *   the VM lets go of it;
 * - a test copy stays on the export for its whole life, which costs no copy at all; cleanup lets
 *   go of it (VmRecovery.remove);
 * - a VM deleted meanwhile lets go of it too.
 * At server start the exports the VMs' overlays still name are served again (VMs that kept
 * running wait for them: point-in-time-exports.ts), before anything may start a VM.
 */
export interface InstantRecoveriesDeps {
  recovered: RecoveredVmRepo;
  vms: VmRepo;
  disks: DiskRepo;
  replicas: ReplicaService;
  /** A running VM's QMP (VmSupervisor.qmpOf). */
  qmpOf: (vmId: string) => QmpClient | null;
  log: Logger;
}

export class InstantRecoveries {
  readonly #d: InstantRecoveriesDeps;
  #timer: NodeJS.Timeout | null = null;
  #watching = false;

  constructor(deps: InstantRecoveriesDeps) {
    this.#d = deps;
  }

  /** At server start: every VM whose overlays still stand on an export gets it served again. */
  async repair(): Promise<void> {
    for (const r of await this.#d.recovered.atPointsInTime()) {
      const at = journalPointTime(r.pointId)!;
      const onExport = await this.#standsOnExport(r.vmId).catch((e: unknown) => {
        this.#d.log.warn({ vmId: r.vmId, err: (e as Error).message }, "could not read a recovered VM's overlays");
        return true;
      });
      if (!onExport) continue;
      await this.#d.replicas.servePointInTime(r.replicaId, at, r.vmId).then(
        () =>
          this.#d.log.info({ vmId: r.vmId, point: r.pointId }, 'serving the point in time a recovered VM stands on'),
        (e: unknown) =>
          this.#d.log.error(
            { vmId: r.vmId, point: r.pointId, err: (e as Error).message },
            'could not serve the point in time a recovered VM stands on: it cannot read its disks',
          ),
      );
    }
  }

  start(): void {
    this.#timer = setInterval(() => void this.#watch(), WATCH_MS);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  async #watch(): Promise<void> {
    if (this.#watching) return;
    this.#watching = true;
    try {
      const users = new Set(this.#d.replicas.pointInTimeUsers());
      if (users.size === 0) return;
      const recovered = new Map((await this.#d.recovered.atPointsInTime()).map((r) => [r.vmId, r]));
      for (const vmId of users) {
        const r = recovered.get(vmId);
        // Deleted meanwhile: nothing stands on the export for it any more.
        if (r === undefined) {
          await this.#d.replicas.releasePointInTime(vmId);
          continue;
        }
        if (r.mode === 'test') continue;
        const qmp = this.#d.qmpOf(vmId);
        if (qmp === null) continue; // moves off once it runs
        await this.#moveOff(vmId, qmp).catch((e: unknown) =>
          this.#d.log.warn(
            { vmId, err: (e as Error).message },
            'moving a recovered VM off its point in time failed; retrying',
          ),
        );
      }
    } finally {
      this.#watching = false;
    }
  }

  /** Streams each disk still on the export; once none is, the VM lets go of it. */
  async #moveOff(vmId: string, qmp: QmpClient): Promise<void> {
    const vm = await this.#d.vms.findById(vmId);
    if (!vm) return;
    const blocks = (await qmp.execute('query-block', undefined, { timeoutMs: 10_000 })) as QmpBlockInfo[];
    let onExport = 0;
    for (const [i, disk] of (await this.#disksOf(vm.definition.diskIds)).entries()) {
      if (!readsThroughBacking(blocks, disk.path)) continue;
      onExport++;
      // The disk's bottom layer is the overlay on the export (vm-argv's node names).
      const node = disk.overlays.length === 0 ? `disk${i}` : `disk${i}-l0`;
      if (await startMoveOffExport(qmp, node))
        this.#d.log.info({ vmId, node, job: streamJobId(node) }, 'moving a recovered VM off its point in time');
    }
    if (onExport > 0) return;
    if (await this.#standsOnExport(vmId)) return; // the live chain moved; the header follows
    await this.#d.replicas.releasePointInTime(vmId);
    this.#d.log.info({ vmId }, 'a recovered VM moved off its point in time: its export may close');
  }

  /** Whether one of the VM's images names an export of this site as its backing (its header). */
  async #standsOnExport(vmId: string): Promise<boolean> {
    const vm = await this.#d.vms.findById(vmId);
    if (!vm) return false;
    for (const disk of await this.#disksOf(vm.definition.diskIds)) {
      if (disk.format !== 'qcow2') continue;
      const info = await queryImageInfo(disk.path, { format: 'qcow2', forceShare: true });
      if (this.#d.replicas.isPointInTimeBacking(info.backingFile)) return true;
    }
    return false;
  }

  /** The VM's disks in its order (the order vm-argv numbers their nodes in). */
  async #disksOf(ids: string[]): Promise<DiskRecord[]> {
    const byId = new Map((await this.#d.disks.byIds(ids)).map((d) => [d.id, d]));
    return ids.flatMap((id) => byId.get(id) ?? []);
  }
}
