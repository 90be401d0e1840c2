import type { QmpClient } from '../qemu/qmp-client.js';
import { MamoriError } from '../core/mamori-error.js';

/** The slice of `query-named-block-nodes` this reads. */
interface NamedNode {
  'node-name': string;
  drv: string;
  file: string;
}

/** The slice of a `query-block` image (with its backing chain) this reads. */
interface ImageInfo {
  filename: string;
  'backing-image'?: ImageInfo;
}

const PROTOCOL_DRIVERS = new Set(['file', 'host_device', 'host_cdrom']);

/**
 * Deletes a snapshot layer of a running (or paused) VM through its QEMU: the overlay made when
 * the snapshot was taken is committed into the layer below it with `block-commit`, the same
 * merge `qemu-img commit` does offline, while the guest keeps writing. mamori's snapshots are
 * external overlays (vm-snapshots.ts), so internal-snapshot commands do not apply.
 *   - overlay is the active layer: an active commit; once it is READY (below holds everything
 *     and mirrors new writes) `job-complete` pivots the device onto the layer below;
 *   - overlay lies lower: a plain commit, after which QEMU points the layer above past it
 *     (writing `below` as its backing file name, so offline tools read the chain too).
 * The committed node is then removed from the graph, which closes its file.
 * Returns 'committed', or 'absent' when the running VM has no such layer: a delete cut after
 * QEMU finished its commit and before the rows were written, run again.
 */
export async function commitLayerLive(
  qmp: QmpClient,
  o: { overlay: string; below: string; jobId: string; timeoutMs: number },
): Promise<'committed' | 'absent'> {
  const nodes = (await qmp.execute('query-named-block-nodes', { flat: true }, { timeoutMs: 10_000 })) as NamedNode[];
  const formatNode = (path: string): string | undefined =>
    nodes.find((n) => n.file === path && !PROTOCOL_DRIVERS.has(n.drv))?.['node-name'];
  const top = formatNode(o.overlay);
  const base = formatNode(o.below);
  if (!base)
    throw new MamoriError(
      'VM_INVALID_STATE',
      `the running VM does not have ${o.below} open, the layer a snapshot's changes would be merged into; stop the VM and delete the snapshot again`,
      { details: { below: o.below } },
    );
  if (!top) return 'absent';
  const blocks = await qmp.execute('query-block', undefined, { timeoutMs: 10_000 });
  const active = blocks.find((b) => b.inserted?.['node-name'] === top);
  const root = active ?? blocks.find((b) => chainHolds(b.inserted?.image as ImageInfo | undefined, o.overlay));
  const device = root?.inserted?.['node-name'];
  if (!device)
    throw new MamoriError('VM_INVALID_STATE', `no disk of the running VM has ${o.overlay} in its chain`, {
      details: { overlay: o.overlay },
    });

  const mine = (ev: { data: { device: string } }): boolean => ev.data.device === o.jobId;
  const completed = qmp.waitForEvent('BLOCK_JOB_COMPLETED', { timeoutMs: o.timeoutMs, predicate: mine });
  const ready = active ? qmp.waitForEvent('BLOCK_JOB_READY', { timeoutMs: o.timeoutMs, predicate: mine }) : null;
  // Whichever waiter is not reached must not turn into an unhandled rejection.
  completed.catch(() => undefined);
  ready?.catch(() => undefined);
  await qmp.execute(
    'block-commit',
    {
      'job-id': o.jobId,
      device,
      'top-node': top,
      'base-node': base,
      ...(active ? {} : { 'backing-file': o.below }),
    },
    { timeoutMs: 30_000 },
  );
  if (ready) {
    await Promise.race([ready, completed]);
    await qmp.execute('job-complete', { id: o.jobId }, { timeoutMs: 30_000 });
  }
  const end = await completed;
  if (end.data.error)
    throw new MamoriError(
      'QMP_ERROR',
      `merging ${o.overlay} into ${o.below} failed in QEMU: ${end.data.error}; the snapshot is kept, and deleting it again retries`,
      { details: { overlay: o.overlay, error: end.data.error } },
    );
  // The node stays in the graph while the monitor holds it (blockdev-add, -blockdev): drop it
  // and then its protocol node. A node QEMU made implicitly went with the commit already.
  for (const n of await nodesOf(qmp, o.overlay)) {
    await qmp.execute('blockdev-del', { 'node-name': n }, { timeoutMs: 10_000 }).catch(() => undefined);
  }
  return 'committed';
}

function chainHolds(image: ImageInfo | undefined, path: string): boolean {
  for (let i = image; i; i = i['backing-image']) if (i.filename === path) return true;
  return false;
}

/** The nodes still open on `path`, format nodes first (a protocol node cannot go while one sits on it). */
async function nodesOf(qmp: QmpClient, path: string): Promise<string[]> {
  const nodes = (await qmp.execute('query-named-block-nodes', { flat: true }, { timeoutMs: 10_000 })) as NamedNode[];
  const on = nodes.filter((n) => n.file === path);
  return [...on.filter((n) => !PROTOCOL_DRIVERS.has(n.drv)), ...on.filter((n) => PROTOCOL_DRIVERS.has(n.drv))].map(
    (n) => n['node-name'],
  );
}
