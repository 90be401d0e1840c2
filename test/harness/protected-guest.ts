import type { ReplicationStatus } from '../../src/replication/replication-service.js';
import type { VmView } from '../../src/vms/vm-service.js';
import type { SiteProcess } from './site-process.js';

export interface ProtectedGuestOptions {
  /** The paired site that receives the replica. */
  to: string;
  /** The data disk the guest writes its log to (default 32M: 8192 records, 13 minutes at 10 a second). */
  dataDisk?: string;
  /** Write-log records a second (default 10). */
  rate?: number;
  /** The RPO (default 1h: the cycles a test relies on are started by hand, or by a plan). */
  rpo?: string;
}

/**
 * A test guest at `site` writing its log, replicated to `opts.to`, with its first point made:
 * the start of every two-site recovery test. Waits on the guest's heartbeat and on the point,
 * never on time. Returns the VM as it then is.
 */
export async function protectWritingGuest(site: SiteProcess, vm: string, opts: ProtectedGuestOptions): Promise<VmView> {
  const rate = String(opts.rate ?? 10);
  await site.cliJson(
    'vm',
    'create',
    vm,
    '--test-guest',
    '--data-disk',
    opts.dataDisk ?? '32M',
    '--writelog-rate',
    rate,
  );
  await site.cliJson('vm', 'start', vm);
  await site.waitFor(
    `${vm} heartbeat`,
    async () => (await site.cliJson<VmView>('vm', 'show', vm)).lastHeartbeatAt,
    180_000,
  );
  await site.cliJson('replicate', 'enable', vm, '--to', opts.to, '--rpo', opts.rpo ?? '1h');
  await site.waitFor(
    `${vm}'s first point`,
    async () => (await site.cliJson<ReplicationStatus>('replicate', 'status', vm)).lastPointAt,
    180_000,
  );
  return site.cliJson<VmView>('vm', 'show', vm);
}
