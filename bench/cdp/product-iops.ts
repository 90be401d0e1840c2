/**
 * `cdp_write_iops_vs_unprotected` (issue 22, >= 0.8) through the product: two test guests at
 * site-a of two real site servers (test/harness/two-sites.ts), one replicated with
 * `--continuous` (its journal streaming to site-b, checkpoints every second), one not. In
 * turns, each runs the test guest's diskbench (src/guest/diskbench.c: O_DIRECT, queue depth 1)
 * on its data disk, started through its guest agent (`guest-exec`), once the protected one's
 * journal streams: its random 4 KiB writes per second are the figure, the median of the rounds.
 * Both guests run throughout, so each measurement shares the 2 cores with the same company
 * (the site servers shipping and receiving the journal among it).
 */
import { join } from 'node:path';
import { TwoSites } from '../../test/harness/two-sites.js';
import { waitStreaming } from '../../test/harness/continuous-guest.js';
import type { ReplicationStatus } from '../../src/replication/replication-service.js';
import type { VmView } from '../../src/vms/vm-service.js';
import { connectGuestAgent, guestSpawn, guestWait } from './guest-exec.js';

export interface ProductIopsRun {
  unprotected: number[];
  protected: number[];
  /** What the protected guest wrote per run went through the journal: its state after each. */
  journalStates: string[];
}

export async function productIopsRun(o: { rounds: number; mib: number; seconds: number }): Promise<ProductIopsRun> {
  const sites = await TwoSites.create();
  try {
    await sites.pairBothWays();
    const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
    const agents = new Map<string, string>();
    for (const name of ['u', 'p']) {
      await a('vm', 'create', name, '--test-guest', '--no-writelog', '--data-disk', `${o.mib * 2}M`, '--guest-agent');
      const vm = await a<VmView>('vm', 'start', name);
      await sites.a.waitFor(
        `${name} boots`,
        async () => (await a<VmView>('vm', 'show', name)).lastHeartbeatAt,
        300_000,
      );
      agents.set(name, join(sites.a.dataDir, 'vms', vm.id, 'qga.sock'));
    }
    await a(
      'replicate',
      'enable',
      'p',
      '--to',
      'site-b',
      '--continuous',
      '--checkpoint',
      '1s',
      '--app-checkpoint',
      'off',
    );
    await waitStreaming(sites.a, 'p', { timeoutMs: 600_000 });
    const out: ProductIopsRun = { unprotected: [], protected: [], journalStates: [] };
    for (let r = 0; r < o.rounds; r++) {
      out.unprotected.push(await guestDiskbench(agents.get('u')!, o.mib, o.seconds));
      out.protected.push(await guestDiskbench(agents.get('p')!, o.mib, o.seconds));
      const j = (await a<ReplicationStatus>('replicate', 'status', 'p')).journal;
      out.journalStates.push(j?.state ?? 'none');
      if (j?.state !== 'streaming')
        throw new Error(`the protected guest's journal is ${j?.state ?? 'gone'}: ${j?.error}`);
    }
    return out;
  } finally {
    await sites.destroy().catch(() => undefined);
  }
}

/** diskbench on the guest's data disk (its only disk, /dev/vda) through its agent; its random 4 KiB write IOPS. */
async function guestDiskbench(socket: string, mib: number, seconds: number): Promise<number> {
  const agent = await connectGuestAgent(socket);
  try {
    const pid = await guestSpawn(agent, '/bin/diskbench', ['/dev/vda', String(mib), String(seconds)], true);
    const r = await guestWait(agent, pid, (seconds * 4 + 300) * 1000);
    const m = /rand_write_iops=([\d.]+)/.exec(r.out);
    if (r.code !== 0 || !m) throw new Error(`diskbench failed (exit ${r.code}): ${r.out}`);
    return Number(m[1]);
  } finally {
    agent.close();
  }
}
