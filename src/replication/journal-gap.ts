import { rm } from 'node:fs/promises';
import type { WriteJournal } from '../cdp/write-journal.js';
import { MamoriError } from '../core/mamori-error.js';
import { dirtyExtents } from '../nbd/extent-copy.js';
import { NbdClient } from '../nbd/nbd-client.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import { bitmapName, judgeBitmaps, queryBlockNodes } from './dirty-bitmaps.js';
import { QMP_MS, startNbdServer } from './fleecing-machinery.js';

/*
 * The writes a continuous journal begins without (cdp/continuous-session.ts): those between the
 * replica's newest point and the moment QEMU's log began. The replication bitmap of the point's
 * generation has marked them (it records from the point's instant on, and goes on recording);
 * a disabled copy of it, taken once the log runs, covers the gap and perhaps a little after it.
 * Those blocks are read from the running disk (an NBD export of the guest's node with the copy
 * as its dirty-bitmap context; the cycle's fleecing cannot run beside the tap's mirror, as QEMU
 * lets one job at a time use the node) and appended to the journal as writes.
 *
 * Runs under the VM's cycle lock: the VM's NBD server is the cycles' too.
 */

/** The copy of the bitmap while the gap is read; a `mamori-` temporary, so a cut run's is cleared by the next cycle. */
const GAP_BITMAP = 'mamori-cdp-gap';
/** Bytes read and journalled at a time. */
const CHUNK_BYTES = 4 * 1024 * 1024;

export async function fillJournalGap(o: {
  qmp: QmpClient;
  /** The guest's node, e.g. `disk0`. */
  node: string;
  /** The replication generation of the base point: its bitmap marks what changed since. */
  generation: number;
  journal: WriteJournal;
  nbdSocket: string;
}): Promise<{ bytes: number }> {
  const { qmp, node } = o;
  const info = (await queryBlockNodes(qmp)).get(node);
  if (info === undefined)
    throw new MamoriError('DISK_NOT_FOUND', `block node ${node} does not exist in this VM's QEMU`);
  const verdict = judgeBitmaps(info.bitmaps, o.generation);
  if (verdict.mode !== 'incremental')
    throw new MamoriError(
      'VM_INVALID_STATE',
      `the writes of ${node} since the base point are not known (${verdict.reason ?? 'no bitmap'}): a cycle resyncs it first`,
    );
  if (info.bitmaps.some((b) => b.name === GAP_BITMAP))
    await qmp.execute('block-dirty-bitmap-remove', { node, name: GAP_BITMAP }, { timeoutMs: QMP_MS });
  await qmp.execute(
    'transaction',
    {
      actions: [
        {
          type: 'block-dirty-bitmap-add',
          data: { node, name: GAP_BITMAP, disabled: true, granularity: verdict.previous!.granularity },
        },
        { type: 'block-dirty-bitmap-merge', data: { node, target: GAP_BITMAP, bitmaps: [bitmapName(o.generation)] } },
      ],
    },
    { timeoutMs: QMP_MS },
  );
  const exportId = `${GAP_BITMAP}-${node}`;
  let serving = false;
  let exported = false;
  try {
    await rm(o.nbdSocket, { force: true });
    await startNbdServer(qmp, o.nbdSocket, GAP_BITMAP);
    serving = true;
    await qmp.execute(
      'block-export-add',
      { type: 'nbd', id: exportId, 'node-name': node, name: exportId, writable: false, bitmaps: [GAP_BITMAP] },
      { timeoutMs: QMP_MS },
    );
    exported = true;
    const context = `qemu:dirty-bitmap:${GAP_BITMAP}`;
    const client = await NbdClient.connect(
      { socketPath: o.nbdSocket },
      { exportName: exportId, metaContexts: [context] },
    );
    try {
      let bytes = 0;
      for (const r of await dirtyExtents(client, context)) {
        for (let at = r.offset; at < r.offset + r.length; at += CHUNK_BYTES) {
          const n = Math.min(CHUNK_BYTES, r.offset + r.length - at);
          await o.journal.appendWrite(at, await client.read(at, n));
          bytes += n;
        }
      }
      return { bytes };
    } finally {
      await client.disconnect().catch(() => undefined);
    }
  } finally {
    if (exported) await qmp.execute('block-export-del', { id: exportId }, { timeoutMs: QMP_MS }).catch(() => undefined);
    if (serving) await qmp.execute('nbd-server-stop', undefined, { timeoutMs: QMP_MS }).catch(() => undefined);
    await qmp
      .execute('block-dirty-bitmap-remove', { node, name: GAP_BITMAP }, { timeoutMs: QMP_MS })
      .catch(() => undefined);
    await rm(o.nbdSocket, { force: true });
  }
}
