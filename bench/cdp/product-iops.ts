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
import { GuestAgent } from '../../src/qemu/guest-agent.js';
import type { ReplicationStatus } from '../../src/replication/replication-service.js';
import type { VmView } from '../../src/vms/vm-service.js';
import { waitFor } from '../bench-common.js';

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
  const agent = await waitFor(
    'the guest agent',
    async () => {
      const ga = await GuestAgent.connect(socket).catch(() => undefined);
      if (ga === undefined) return undefined;
      try {
        await ga.sync(2_000);
        return ga;
      } catch {
        ga.close();
        return undefined;
      }
    },
    120_000,
    500,
  );
  try {
    const { pid } = await agent.execute<{ pid: number }>(
      'guest-exec',
      { path: '/bin/diskbench', arg: ['/dev/vda', String(mib), String(seconds)], 'capture-output': true },
      10_000,
    );
    const status = await waitFor(
      'diskbench to finish',
      async () => {
        const s = await agent.execute<{ exited: boolean; exitcode?: number; 'out-data'?: string }>(
          'guest-exec-status',
          { pid },
          10_000,
        );
        return s.exited ? s : undefined;
      },
      (seconds * 4 + 300) * 1000,
      500,
    );
    const text = Buffer.from(status['out-data'] ?? '', 'base64').toString('utf8');
    const m = /rand_write_iops=([\d.]+)/.exec(text);
    if (status.exitcode !== 0 || !m) throw new Error(`diskbench failed (exit ${status.exitcode}): ${text}`);
    return Number(m[1]);
  } finally {
    agent.close();
  }
}
