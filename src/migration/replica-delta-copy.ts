import type { QmpClient } from '../qemu/qmp-client.js';
import { MamoriError } from '../core/mamori-error.js';
import { bitmapName } from '../replication/dirty-bitmaps.js';

/**
 * Replica-aware migration: the destination's disks read as the replica's newest point; what
 * the guest changed since (the replication bitmap of that generation) must cross, then a
 * write-blocking mirror with sync 'none' forwards every later write. QEMU 7.2 cannot start that mirror while
 * the guest runs and a backup still copies: a block job blocks the other jobs on its node, and
 * its mirror has no bitmap of its own to start from. Copying the changes by other means while
 * the mirror ran could land an old block over a newer one the mirror had already forwarded.
 * So the guest is paused once, between the last copy and the mirror's start. To keep that pause
 * short, most of the changes are copied first while the guest runs: a bitmap backup of a
 * snapshot of the generation's bitmap (its copy-before-write filter keeps that copy consistent
 * as of the snapshot), while a second bitmap, started in the same transaction, records what
 * changes meanwhile. Only that second bitmap is copied while paused.
 * Returns how long the guest was paused (ms).
 */
export async function copyReplicaDelta(
  qmp: QmpClient,
  disks: number,
  generation: number,
  stats: { delta: number },
): Promise<number> {
  const nodes = [...Array(disks).keys()].map((i) => ({
    node: `disk${i}`,
    pre: `mig-pre${i}`,
    since: `mig-since${i}`,
    i,
  }));
  const backup = async (bitmapOf: (d: (typeof nodes)[number]) => string, what: string): Promise<void> => {
    for (const d of nodes) {
      const done = qmp.waitForEvent('BLOCK_JOB_COMPLETED', {
        timeoutMs: 600_000,
        predicate: (ev) => ev.data.device === `migd${d.i}`,
      });
      await qmp.execute('blockdev-backup', {
        'job-id': `migd${d.i}`,
        device: d.node,
        target: `mig-tgt${d.i}`,
        sync: 'bitmap',
        bitmap: bitmapOf(d),
        'bitmap-mode': 'never',
      });
      const ev = await done;
      if (ev.data.error) throw new MamoriError('QMP_ERROR', `copying ${what} failed: ${ev.data.error}`);
      stats.delta += ev.data.offset;
    }
  };
  try {
    await qmp.execute(
      'transaction',
      {
        actions: nodes.flatMap((d) => [
          {
            type: 'block-dirty-bitmap-add' as const,
            data: { node: d.node, name: d.pre, disabled: true, persistent: false },
          },
          {
            type: 'block-dirty-bitmap-merge' as const,
            data: { node: d.node, target: d.pre, bitmaps: [bitmapName(generation)] },
          },
          { type: 'block-dirty-bitmap-add' as const, data: { node: d.node, name: d.since, persistent: false } },
        ]),
      },
      { timeoutMs: 30_000 },
    );
    await backup((d) => d.pre, "the changes since the replica's point");
    const wasRunning = (await qmp.execute('query-status', undefined, { timeoutMs: 5_000 })).running;
    const t0 = Date.now();
    if (wasRunning) await qmp.execute('stop', undefined, { timeoutMs: 10_000 });
    try {
      await backup((d) => d.since, 'the changes made during the first copy');
      for (const d of nodes)
        await qmp.execute('blockdev-mirror', {
          'job-id': `mig${d.i}`,
          device: d.node,
          target: `mig-tgt${d.i}`,
          sync: 'none',
          'copy-mode': 'write-blocking',
        });
    } finally {
      if (wasRunning) await qmp.execute('cont', undefined, { timeoutMs: 10_000 });
    }
    return Date.now() - t0;
  } finally {
    await removeMigrationBitmaps(qmp, disks);
  }
}

/** The replica-aware copy's own bitmaps (never persistent): gone after the copy, and after a rollback found them left. */
export async function removeMigrationBitmaps(qmp: QmpClient, disks: number): Promise<void> {
  for (let i = 0; i < disks; i++) {
    for (const name of [`mig-pre${i}`, `mig-since${i}`, `mig-delta${i}`])
      await qmp.execute('block-dirty-bitmap-remove', { node: `disk${i}`, name }).catch(() => undefined);
  }
}
