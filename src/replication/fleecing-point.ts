import { rm } from 'node:fs/promises';
import { MamoriError } from '../core/mamori-error.js';
import { createQcow2OverQmp } from '../qemu/qmp-image-create.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import type { QmpTransactionAction } from '../qemu/qmp-types.js';
import type { PointConsistency } from './replica-chain.js';
import {
  DEFAULT_GRANULARITY,
  bitmapName,
  canPersistBitmaps,
  fleeceBitmapName,
  judgeBitmaps,
  queryBlockNodes,
  type BitmapMode,
  type ResyncReason,
} from './dirty-bitmaps.js';
import {
  DEFAULT_PREFIX,
  QMP_MS,
  machineryNames,
  removeMachinery,
  startNbdServer,
  stopNbdServerIfIdle,
  type FleeceMachinery,
} from './fleecing-machinery.js';
import {
  abortOfflineFleecingPoint,
  completeOfflineFleecingPoint,
  type OfflineFleecingPoint,
} from './offline-fleecing-point.js';

/**
 * A fleecing point: a frozen, point-in-time view of a running VM's disks, served read-only
 * over NBD while the guest keeps writing (notes/qemu-7.2.md, "Changed-block tracking").
 *
 * Recipe (QEMU 7.2), per disk node `disk<i>`:
 *   blockdev-create {file FLEECE} and {qcow2 SIZE}, in the VM's QEMU (no backing in the header)
 *   blockdev-add {driver:qcow2, node-name:F, file:F-file, backing:disk<i>}
 *   transaction [ block-dirty-bitmap-add {disk<i>, mamori-<g+1>, persistent: qcow2 only},
 *                 block-dirty-bitmap-add {disk<i>, mamori-<g+1>-fleece, disabled}      (incremental)
 *                 block-dirty-bitmap-merge {disk<i>, target mamori-<g+1>-fleece, [mamori-<g>]}
 *                 blockdev-backup {device:disk<i>, target:F, sync:none, job-id} ]
 *   nbd-server-start {unix socket}; block-export-add {nbd, node-name:F, bitmaps:[fleece bitmap]}
 * The backup job copies old data into F before the guest overwrites it; reads of F fall
 * through to disk<i> elsewhere, so F reads as the disk was at the transaction.
 *
 * The previous bitmap mamori-<g> keeps recording through the cycle. Complete: it is removed
 * and mamori-<g+1> (started at the fleecing instant) carries on. Abort: mamori-<g+1> is
 * removed and mamori-<g> kept: it holds every write since the last good point, including
 * those the cut cycle was copying, so the next cycle sends them again. (Merging old into new
 * would give the same bits; keeping the old one is one step fewer and needs no merge.)
 *
 * The overlay nodes, jobs, exports and NBD server are fleecing-machinery.ts; a stopped VM's
 * point is offline-fleecing-point.ts.
 */
/** Guest agent hooks, called around the transaction (freeze, then thaw at once). */
export interface GuestFreezeHooks {
  freeze: () => Promise<void>;
  thaw: () => Promise<void>;
  /** Fail instead of falling back to a crash-consistent point when freeze fails. */
  required?: boolean;
}

export interface CreateFleecingPointOptions {
  qmp: QmpClient;
  /** Each disk's guest-facing node (`disk<i>` in vm-argv). */
  nodes: string[];
  /**
   * This VM's own folder for the fleece overlays (their names repeat across VMs); they fill
   * with the old data the guest overwrites during the cycle, up to the disk's size.
   */
  workDir: string;
  /** Unix socket of this VM's NBD server (started here if needed). */
  nbdSocket: string;
  /** Generation of the last point the replica holds; null if it holds none. */
  previousGeneration: number | null;
  granularity?: number;
  /** Prefix of export names, node names, job ids and files (default 'mamori-fleece'). */
  prefix?: string;
  guest?: GuestFreezeHooks;
}

export interface FleecedDisk extends FleeceMachinery {
  node: string;
  driver: string;
  virtualSize: number;
  mode: BitmapMode;
  resyncReason: ResyncReason | null;
  /** The bitmap counting from this point on. */
  bitmap: string;
  /** False for raw and virtual-RDM disks: a stop or crash of QEMU loses the bitmap. */
  persistent: boolean;
  previousBitmap: string | null;
  /** Exported disabled copy of previousBitmap (incremental only). */
  fleeceBitmap: string | null;
  /** `qemu:dirty-bitmap:<fleeceBitmap>`: the areas to copy (incremental only). */
  metaContext: string | null;
}

/** Plain data (JSON-safe): a job journal can store it and tear the point down after a restart. */
export interface FleecingPoint {
  kind: 'live';
  generation: number;
  previousGeneration: number | null;
  /** Every write the guest saw acknowledged before this instant is in the point. */
  at: string;
  consistency: PointConsistency;
  freezeError: string | null;
  thawError: string | null;
  nbdSocket: string;
  prefix: string;
  /** Every disk is a first copy: read allocated extents (`base:allocation`). */
  full: boolean;
  /** Some disk's bitmap cannot be trusted: compare checksums for those disks. */
  needsResync: boolean;
  disks: FleecedDisk[];
}

export async function createFleecingPoint(opts: CreateFleecingPointOptions): Promise<FleecingPoint> {
  const { qmp } = opts;
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  if (opts.nodes.length === 0 || new Set(opts.nodes).size !== opts.nodes.length) {
    throw new MamoriError('INVALID_INPUT', 'a fleecing point needs one or more distinct disk nodes', {
      details: { nodes: opts.nodes },
    });
  }
  const generation = (opts.previousGeneration ?? 0) + 1;
  const blockNodes = await queryBlockNodes(qmp);
  const disks: FleecedDisk[] = [];
  const stale: { node: string; name: string }[] = [];
  for (const node of opts.nodes) {
    const info = blockNodes.get(node);
    if (info === undefined)
      throw new MamoriError('DISK_NOT_FOUND', `block node ${node} does not exist in this VM's QEMU`, {
        details: { node },
      });
    const verdict = judgeBitmaps(info.bitmaps, opts.previousGeneration);
    for (const name of verdict.stale) stale.push({ node, name });
    const incremental = verdict.mode === 'incremental';
    disks.push({
      node,
      driver: info.driver,
      virtualSize: info.virtualSize,
      mode: verdict.mode,
      resyncReason: verdict.reason,
      ...machineryNames(node, opts.workDir, prefix),
      bitmap: bitmapName(generation),
      persistent: canPersistBitmaps(info.driver),
      previousBitmap: incremental ? verdict.previous!.name : null,
      fleeceBitmap: incremental ? fleeceBitmapName(generation) : null,
      metaContext: incremental ? `qemu:dirty-bitmap:${fleeceBitmapName(generation)}` : null,
    });
  }
  const point: FleecingPoint = {
    kind: 'live',
    generation,
    previousGeneration: opts.previousGeneration,
    at: '',
    consistency: 'crash',
    freezeError: null,
    thawError: null,
    nbdSocket: opts.nbdSocket,
    prefix,
    full: disks.every((d) => d.mode === 'full'),
    needsResync: disks.some((d) => d.mode === 'resync'),
    disks,
  };

  // Leftovers of a cycle cut by a server crash: its exports, job, nodes, files, bitmaps.
  await removeMachinery(qmp, disks);
  for (const s of stale) await qmp.execute('block-dirty-bitmap-remove', s, { timeoutMs: QMP_MS });

  try {
    for (const d of disks) {
      // Made by the VM's own QEMU (blockdev-create), not by a qemu-img process: a process
      // start cost 50-600 ms of every cycle on a loaded host.
      await createQcow2OverQmp(qmp, {
        file: d.fleeceFile,
        fileNode: d.fleeceFileNode,
        sizeBytes: d.virtualSize,
        backing: null,
        layout: 'qemu-default',
        jobId: `${d.fleeceNode}-mk`,
        timeoutMs: QMP_MS,
      });
      await qmp.execute(
        'blockdev-add',
        { driver: 'qcow2', 'node-name': d.fleeceNode, file: d.fleeceFileNode, backing: d.node },
        { timeoutMs: QMP_MS },
      );
    }
    const actions = fleecingActions(disks, opts.granularity ?? DEFAULT_GRANULARITY, blockNodes);
    await runFrozen(point, opts.guest, async () => {
      point.at = new Date().toISOString();
      await qmp.execute('transaction', { actions }, { timeoutMs: 30_000 });
    });
    await startNbdServer(qmp, opts.nbdSocket, prefix);
    for (const d of disks) {
      await qmp.execute(
        'block-export-add',
        {
          type: 'nbd',
          id: d.exportName,
          name: d.exportName,
          'node-name': d.fleeceNode,
          writable: false,
          ...(d.fleeceBitmap === null ? {} : { bitmaps: [d.fleeceBitmap] }),
        },
        { timeoutMs: QMP_MS },
      );
    }
    return point;
  } catch (e) {
    await teardown(qmp, point, 'abort').catch(() => undefined);
    throw e;
  }
}

/** Completes or aborts a point recorded before a server crash: the one place that knows both kinds. */
export async function settleFleecingPoint(
  point: FleecingPoint | OfflineFleecingPoint,
  qmp: QmpClient | null,
  outcome: 'complete' | 'abort',
): Promise<void> {
  if (point.kind === 'offline')
    return outcome === 'complete' ? completeOfflineFleecingPoint(point) : abortOfflineFleecingPoint(point);
  if (qmp !== null) return teardown(qmp, point, outcome);
  // QEMU is gone: nothing of the point lives but its overlay files.
  for (const d of point.disks) await rm(d.fleeceFile, { force: true });
}

/**
 * The transaction of a fleecing point (pure, unit-tested). All disks switch at one instant,
 * so a multi-disk VM gets one crash-consistent point.
 */
export function fleecingActions(
  disks: readonly FleecedDisk[],
  granularity: number,
  nodes: ReadonlyMap<string, { bitmaps: { name: string; granularity: number }[] }>,
): QmpTransactionAction[] {
  const actions: QmpTransactionAction[] = [];
  for (const d of disks) {
    actions.push({
      type: 'block-dirty-bitmap-add',
      data: { node: d.node, name: d.bitmap, persistent: d.persistent, granularity },
    });
    if (d.previousBitmap !== null && d.fleeceBitmap !== null) {
      const prevGranularity =
        nodes.get(d.node)?.bitmaps.find((b) => b.name === d.previousBitmap)?.granularity ?? granularity;
      actions.push(
        // Disabled: an enabled bitmap cannot be exported read-only, and this copy must not grow.
        {
          type: 'block-dirty-bitmap-add',
          data: { node: d.node, name: d.fleeceBitmap, persistent: false, disabled: true, granularity: prevGranularity },
        },
        {
          type: 'block-dirty-bitmap-merge',
          data: { node: d.node, target: d.fleeceBitmap, bitmaps: [d.previousBitmap] },
        },
      );
    }
    actions.push({
      type: 'blockdev-backup',
      data: { device: d.node, target: d.fleeceNode, sync: 'none', 'job-id': d.jobId },
    });
  }
  return actions;
}

/** The cycle succeeded (the replica committed the point): the new bitmap carries on alone. */
export async function completeFleecingPoint(qmp: QmpClient, point: FleecingPoint): Promise<void> {
  await teardown(qmp, point, 'complete');
}

/** The cycle failed: forget the new bitmap, keep the one that covers everything since the last good point. */
export async function abortFleecingPoint(qmp: QmpClient, point: FleecingPoint): Promise<void> {
  await teardown(qmp, point, 'abort');
}

/**
 * Removes what exists of the point and nothing else, so it can run again after any crash:
 * exports, then the backup jobs (they hold the fleece nodes), the nodes and their files,
 * then bitmaps (an exported bitmap is locked until its export is gone).
 */
async function teardown(qmp: QmpClient, point: FleecingPoint, outcome: 'complete' | 'abort'): Promise<void> {
  await removeMachinery(qmp, point.disks);
  const nodes = await queryBlockNodes(qmp);
  for (const d of point.disks) {
    const names = new Set(nodes.get(d.node)?.bitmaps.map((b) => b.name) ?? []);
    const drop = [d.fleeceBitmap, outcome === 'complete' ? d.previousBitmap : d.bitmap];
    for (const name of drop) {
      if (name !== null && names.has(name))
        await qmp.execute('block-dirty-bitmap-remove', { node: d.node, name }, { timeoutMs: QMP_MS });
    }
  }
  await stopNbdServerIfIdle(qmp, point.nbdSocket);
}

async function runFrozen(
  point: FleecingPoint,
  guest: GuestFreezeHooks | undefined,
  body: () => Promise<void>,
): Promise<void> {
  let frozen = false;
  if (guest !== undefined) {
    try {
      await guest.freeze();
      frozen = true;
    } catch (e) {
      if (guest.required === true) {
        throw new MamoriError(
          'VM_INVALID_STATE',
          `the guest could not freeze its filesystems (${(e as Error).message}); ` +
            'check its guest agent, or allow crash-consistent points',
          { details: { wanted: 'GUEST_FREEZE_FAILED' }, cause: e },
        );
      }
      point.freezeError = (e as Error).message;
    }
  }
  try {
    await body();
    point.consistency = frozen ? 'application' : 'crash';
  } finally {
    // Thaw at once, success or not: a frozen guest stalls every write.
    if (frozen) await guest!.thaw().catch((e: unknown) => (point.thawError = (e as Error).message));
  }
}
