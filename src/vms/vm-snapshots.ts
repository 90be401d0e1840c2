import { mkdir, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { StoreHandle } from '../store/store-handle.js';
import { SnapshotRepo } from '../store/repos/snapshot-repo.js';
import { DiskRepo } from '../store/repos/disk-repo.js';
import type { VmRow } from '../store/repos/vm-repo.js';
import { activeLayer, type DiskRecord } from '../disks/disk-record.js';
import { assertValidName } from '../core/names.js';
import { MamoriError } from '../core/mamori-error.js';
import { commitImage, createQcow2, rebaseUnsafe } from '../qemu/qemu-img-write.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import { commitLayerLive } from './live-layer-commit.js';
import { linkCount, unshareFile } from '../disks/shared-layer.js';

export interface SnapshotView {
  name: string;
  createdAt: string;
  /** Taken while the VM ran: crash-consistent across all of its disks (one QMP transaction). */
  running: boolean;
}

/**
 * Refuses what the guest owns. Physical RDM: the guest drives the device directly, so no
 * layer may sit between them. Shared disks: another VM writes the same device, so an
 * overlay on one side would split the disk in two.
 */
export function assertLayerable(disk: DiskRecord, operation: string): void {
  if (disk.kind === 'rdm' && disk.rdmMode === 'physical') {
    throw new MamoriError(
      'RDM_PHYSICAL_REFUSED',
      `${operation} is refused: disk ${disk.name} is a physical-mode raw device mapping (${disk.path}), which the guest owns. Use a virtual-mode RDM or an image disk`,
      { details: { disk: disk.name, operation } },
    );
  }
  if (disk.shared) {
    throw new MamoriError(
      'DISK_SHARED_REFUSED',
      `${operation} is refused: disk ${disk.name} is shared with other VMs; an overlay on one VM would split it`,
      { details: { disk: disk.name, operation } },
    );
  }
}

/**
 * An overlay's file: in the pool's hidden .layers folder and named by the disk's id, so no
 * disk name a user chooses (names cannot start with a dot) can be another object's file.
 */
export function snapshotOverlayPath(poolDir: string, d: DiskRecord, name: string): string {
  return join(poolDir, LAYERS_DIR, `${d.id}.${name}.qcow2`);
}

export const LAYERS_DIR = '.layers';

/**
 * Where snapshot `name` sits in a disk's chain: the index in `overlays` of the overlay made
 * when it was taken, or -1 for a disk attached after it. The snapshot's content is the layer
 * just below that overlay. (Overlays made before ids named them were DISK.NAME.qcow2.)
 */
export function snapshotOverlayIndex(d: DiskRecord, name: string): number {
  return d.overlays.findIndex(
    (o) => basename(o) === `${d.id}.${name}.qcow2` || basename(o) === `${d.name}.${name}.qcow2`,
  );
}

/**
 * External snapshots: each disk gets a new qcow2 overlay and the guest writes there from
 * now on; what lies below is the snapshot. Running VMs switch all disks in one QMP
 * transaction (crash-consistent); stopped VMs get overlays made with qemu-img.
 */
export class VmSnapshots {
  #snapshots: SnapshotRepo;
  #disks: DiskRepo;
  #poolDir: string;

  constructor(db: StoreHandle, poolDir: string) {
    this.#snapshots = new SnapshotRepo(db);
    this.#disks = new DiskRepo(db);
    this.#poolDir = poolDir;
  }

  async list(vm: VmRow): Promise<SnapshotView[]> {
    const rows = await this.#snapshots.forVm(vm.id);
    return rows.map((r) => ({ name: r.name, createdAt: r.createdAt, running: r.running }));
  }

  async create(vm: VmRow, name: string, qmp: QmpClient | null): Promise<SnapshotView> {
    assertValidName('snapshot', name);
    const disks = await this.#disks.byIds(vm.definition.diskIds);
    const ordered = vm.definition.diskIds.map((id) => disks.find((d) => d.id === id)!);
    for (const d of ordered) assertLayerable(d, 'snapshot');
    if (ordered.length === 0) throw new MamoriError('INVALID_INPUT', `VM ${vm.name} has no disks to snapshot`);
    if ((await this.#snapshots.findId(vm.id, name)) !== undefined) {
      throw new MamoriError(
        'SNAPSHOT_EXISTS',
        `VM ${vm.name} already has a snapshot named ${name}; choose another name`,
      );
    }
    const running = qmp !== null;
    const made: string[] = [];
    const added: string[] = [];
    let switched = false;
    try {
      const overlays: { disk: DiskRecord; overlay: string; node: string }[] = [];
      for (const [i, d] of ordered.entries()) {
        const overlay = snapshotOverlayPath(this.#poolDirOf(d), d, name);
        await mkdir(dirname(overlay), { recursive: true });
        // qemu-img create would replace a file there: never let it (a leftover is refused, not
        // reused). The empty file made with O_EXCL claims the path first, so of two requests for
        // one name (two servers on one database) only one goes on; the other removes nothing.
        const claimed = await writeFile(overlay, '', { flag: 'wx' }).then(
          () => true,
          (e: NodeJS.ErrnoException) => {
            if (e.code === 'EEXIST') return false;
            throw e;
          },
        );
        if (!claimed)
          throw new MamoriError(
            'SNAPSHOT_EXISTS',
            `an overlay file for snapshot ${name} of disk ${d.name} already exists (${overlay}); choose another snapshot name`,
          );
        made.push(overlay);
        const below = activeLayer(d);
        // -u: the backing is opened by the VM, not here (a host device may be in use by it).
        await createQcow2(overlay, {
          unsafe: true,
          backing: { file: below.path, format: below.format },
          sizeBytes: d.sizeBytes,
        });
        overlays.push({ disk: d, overlay, node: `disk${i}-snap-${name}` });
      }
      if (qmp) {
        const blocks = await qmp.execute('query-block', undefined, { timeoutMs: 10_000 });
        const actions = [];
        for (const [i, o] of overlays.entries()) {
          const top = blocks.find((b) => b.qdev?.includes(`/disk${i}-dev/`) || b.qdev === `disk${i}-dev`)?.inserted?.[
            'node-name'
          ];
          if (!top)
            throw new MamoriError(
              'VM_INVALID_STATE',
              `cannot find the active block node of disk ${o.disk.name} in VM ${vm.name}`,
            );
          await qmp.execute(
            'blockdev-add',
            {
              driver: 'qcow2',
              'node-name': o.node,
              file: { driver: 'file', filename: o.overlay },
              backing: null,
            } as never,
            { timeoutMs: 10_000 },
          );
          added.push(o.node);
          actions.push({ type: 'blockdev-snapshot' as const, data: { node: top, overlay: o.node } });
        }
        await qmp.execute('transaction', { actions }, { timeoutMs: 30_000 });
        switched = true;
      }
      const now = new Date().toISOString();
      await this.#snapshots.record(
        vm.id,
        name,
        now,
        running,
        overlays.map((o) => ({ diskId: o.disk.id, below: o.disk.overlays, overlay: o.overlay })),
      );
      return { name, createdAt: now, running };
    } catch (e) {
      // Once the guest writes into the overlays they hold its newest data: never remove them.
      if (switched) throw e;
      // Nothing switched (the transaction is all-or-nothing): drop what was prepared.
      for (const node of added)
        await qmp?.execute('blockdev-del', { 'node-name': node }, { timeoutMs: 10_000 }).catch(() => undefined);
      for (const f of made) await rm(f, { force: true });
      throw e;
    }
  }

  /**
   * Deletes a snapshot: on each disk, the overlay made when the snapshot was taken (which
   * holds the changes since) is committed into the layer below it (which holds the
   * snapshot), the layer above is pointed past it, and it goes. The data the VM sees is
   * unchanged, and so is every other snapshot. A stopped VM's layers are merged with
   * qemu-img; a running or paused VM's by its own QEMU (`qmp`, live-layer-commit.ts). Each
   * step is safe to repeat: a cut delete leaves the row, and running it again finishes it.
   */
  async delete(vm: VmRow, name: string, qmp: QmpClient | null = null): Promise<void> {
    const snapshotId = await this.#snapshots.findId(vm.id, name);
    if (snapshotId === undefined)
      throw new MamoriError(
        'SNAPSHOT_NOT_FOUND',
        `VM ${vm.name} has no snapshot ${name}; see 'mamori vm snapshot list ${vm.name}'`,
      );
    const disks = await this.#disks.byIds(vm.definition.diskIds);
    const layerBelow = (d: DiskRecord, i: number): { path: string; format: string } =>
      i === 0 ? { path: d.path, format: d.format } : { path: d.overlays[i - 1]!, format: 'qcow2' };
    // A layer may be a desktop pool's replica too (a hard link, disks/shared-layer.ts), and the
    // commit writes into it. Stopped, the VM gets a copy of its own first; running, its QEMU
    // holds the shared file open and would write into it whatever its name: refused, before
    // any disk is touched.
    if (qmp) {
      for (const d of disks) {
        const i = snapshotOverlayIndex(d, name);
        if (i < 0) continue;
        const below = layerBelow(d, i);
        if ((await linkCount(below.path)) > 1) {
          throw new MamoriError(
            'LAYER_SHARED',
            `the layer of snapshot ${name} on disk ${d.name} is also a desktop pool's replica (${below.path} has other names): ` +
              `stop VM ${vm.name} and delete the snapshot again (the layer is then copied for the VM first), or delete the pools or desktops still on ${name}`,
            { details: { disk: d.name, snapshot: name, path: below.path } },
          );
        }
      }
    }
    for (const d of disks) {
      const i = snapshotOverlayIndex(d, name);
      if (i < 0) continue;
      const overlay = d.overlays[i]!;
      const below = layerBelow(d, i);
      if (qmp) {
        await commitLayerLive(qmp, { overlay, below: below.path, jobId: `snapdel-${d.id}`, timeoutMs: 6 * 3600_000 });
      } else {
        await unshareFile(below.path);
        // -d: the overlay is dropped right after, so it need not be emptied; -b names the target explicitly.
        await commitImage(overlay, { format: 'qcow2', base: below.path });
        const above = d.overlays[i + 1];
        if (above) await rebaseUnsafe(above, { file: below.path, format: below.format });
      }
      await this.#snapshots.removeOverlay(d.id, overlay);
      await rm(overlay, { force: true });
    }
    await this.#snapshots.delete(snapshotId);
  }

  #poolDirOf(d: DiskRecord): string {
    // Overlays of images sit beside them; overlays of RDM devices go to the storage pool.
    return d.kind === 'image' ? join(d.path, '..') : this.#poolDir;
  }
}
