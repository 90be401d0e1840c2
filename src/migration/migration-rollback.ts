import type { VmRow } from '../store/repos/vm-repo.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import type { ReplicationService } from '../replication/replication-service.js';
import { MamoriError } from '../core/mamori-error.js';
import type { Logger } from '../core/logger.js';
import { abortConnections } from './link-watchdog.js';
import { removeMigrationBitmaps } from './replica-delta-copy.js';
import type { MigrationContext } from './outgoing-state.js';

/** The source QEMU's TLS credentials object of a migration: its id is this plus the job's (the id when the context has none). */
export const MIGRATION_TLS_ID = 'mig-tls';

/** Before switchover: everything made for the migration goes, here and at the destination; the guest runs on. */
export async function rollBackMigration(
  deps: { log: Logger; replication: ReplicationService },
  vm: VmRow,
  ctx: MigrationContext,
  qmp: QmpClient | null,
  peer: { request: (m: string, p: string, b?: unknown) => Promise<unknown> },
): Promise<void> {
  if (qmp) {
    const mig = await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 }).catch(() => null);
    if (mig?.status === 'completed') {
      // Too late to roll back: the destination has the whole VM; continuing here would run two.
      throw new MamoriError(
        'VM_INVALID_STATE',
        `the migration of ${vm.name} completed; finish it at the destination instead of rolling back`,
      );
    }
    await qmp.execute('migrate_cancel').catch(() => undefined);
    // The migration thread is still using the stream (and its TLS session) while 'cancelling':
    // wait for it to settle before anything it uses goes. It may also have completed meanwhile.
    const settled = await waitMigrationSettled(qmp);
    if (settled === 'completed')
      throw new MamoriError(
        'VM_INVALID_STATE',
        `the migration of ${vm.name} completed while it was being cancelled; finish it at the destination instead of rolling back`,
      );
    for (let i = 0; i < ctx.disks; i++) {
      for (const job of [`mig${i}`, `migd${i}`])
        await qmp.execute('block-job-cancel', { device: job, force: true }).catch(() => undefined);
    }
    await waitJobsGone(qmp, ctx.disks).catch(async () => {
      // A mirror waiting on a write the destination never acknowledges cannot end: cut its connection.
      if (ctx.target) await abortConnections(ctx.target.host, [ctx.target.nbdPort]).catch(() => undefined);
      await waitJobsGone(qmp, ctx.disks).catch(() => undefined);
    });
    await removeMigrationBitmaps(qmp, ctx.disks);
    let nodesGone = true;
    for (let i = 0; i < ctx.disks; i++) {
      await qmp.execute('blockdev-del', { 'node-name': `mig-tgt${i}` }).catch((e: unknown) => {
        // Never added (an early failure, or a cut before the mirror step) is fine; still in use
        // is not. QEMU 7.2 says "Failed to find node with node-name=...".
        if (!/not found|cannot find|failed to find/i.test((e as Error).message)) nodesGone = false;
      });
    }
    // Credentials are freed only when nothing can still use them (a freed TLS object under a
    // live NBD or migration channel would crash QEMU); otherwise they stay, under this
    // migration's own id, so the next migration is not blocked by them.
    if (nodesGone && settled !== null)
      await qmp.execute('object-del', { id: ctx.tlsId ?? MIGRATION_TLS_ID }).catch(() => undefined);
    else deps.log.warn({ vm: vm.name }, 'the migration TLS credentials stay in QEMU: something may still use them');
    const status = await qmp.execute('query-status', undefined, { timeoutMs: 5_000 }).catch(() => null);
    // pause-before-switchover paused the guest; nothing switched, so it runs on here.
    if (status && !status.running) await qmp.execute('cont').catch(() => undefined);
  }
  await peer
    .request('POST', `/migrations/${vm.id}/abort`, {})
    .catch((e: unknown) =>
      deps.log.warn(
        { vm: vm.name, err: e },
        'the destination did not confirm the abort; it removes its copy at its next start',
      ),
    );
  // Replica-aware: replication was paused for the migration; it goes on as before.
  if (ctx.replication) await deps.replication.setPaused(vm.name, false).catch(() => undefined);
}

/** Waits until the migration block jobs are gone; `stats.mirrored` keeps the most they copied. */
export async function waitJobsGone(
  qmp: QmpClient,
  n: number,
  stats: { mirrored: number } = { mirrored: 0 },
): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const jobs = (await qmp.execute('query-block-jobs', undefined, { timeoutMs: 10_000 })).filter((j) =>
      j.device.startsWith('mig'),
    );
    if (jobs.length === 0) return;
    stats.mirrored = Math.max(
      stats.mirrored,
      jobs.reduce((sum, j) => sum + j.offset, 0),
    );
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new MamoriError('QMP_TIMEOUT', `${n} disk mirror(s) did not end after cancel`);
}

/** After migrate_cancel: the final status, or null when QEMU did not settle within 30 s. */
async function waitMigrationSettled(qmp: QmpClient): Promise<string | null> {
  const end = Date.now() + 30_000;
  while (Date.now() < end) {
    const info = await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 }).catch(() => null);
    const st = info?.status ?? 'none';
    if (st === 'cancelled' || st === 'failed' || st === 'completed' || st === 'none') return st;
    await new Promise((r) => setTimeout(r, 50));
  }
  return null;
}
