import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { runProcess } from '../../core/run-process.js';
import { MamoriError } from '../../core/mamori-error.js';
import type { ConformanceConfig } from '../conformance-suite.js';

/**
 * Two scratch zpools on sparse files for `mamori adapter test zfs` without --config: a
 * source dataset with its peer set (how an operator starts replicating with the ZFS adapter)
 * and an empty peer pool, both on this host (peerCommand []). Nothing of the operator's is
 * touched: the pools have names of their own, are kept out of zpool.cache, and go with
 * their files when the run ends. ZFS must be running (the kernel module, or zfs-fuse).
 */
export async function withZfsScratchArrays<T>(body: (cfg: ConformanceConfig) => Promise<T>): Promise<T> {
  await runProcess('zpool', ['list', '-H', '-o', 'name'], { timeoutMs: 30_000 }).catch((e: unknown) => {
    throw new MamoriError('ADAPTER_FAILED', `ZFS does not answer on this host (${(e as Error).message.split('\n')[0]}): load the zfs module or start zfs-fuse, or give --config with arrays of your own`, { cause: e });
  });
  const dir = await mkdtemp(join(tmpdir(), 'mamori-zfs-scratch-'));
  const tag = randomBytes(3).toString('hex');
  const pools: string[] = [];
  try {
    for (const side of ['a', 'b']) {
      const name = `mamori-scratch-${tag}-${side}`;
      const image = join(dir, `${side}.img`);
      await writeFile(image, '');
      await truncate(image, 512 * 1024 * 1024);
      await runProcess('zpool', ['create', '-o', 'cachefile=none', '-m', join(dir, `mnt-${side}`), name, image], { timeoutMs: 120_000 });
      pools.push(name);
    }
    const [a, b] = pools as [string, string];
    await runProcess('zfs', ['create', `${a}/vmstore`], { timeoutMs: 60_000 });
    await runProcess('zfs', ['set', `mamori:peer=${b}/vmstore`, `${a}/vmstore`], { timeoutMs: 60_000 });
    return await body({
      source: { connection: { pools: a, peerCommand: '[]' }, arrayId: a, deviceId: 'vmstore' },
      target: { connection: { pools: b, peerCommand: '[]' }, arrayId: b },
    });
  } finally {
    // zfs-fuse answers "busy" for a moment after files close: a few tries before giving up.
    for (const p of pools) {
      for (let i = 0; i < 10; i++) {
        const ok = await runProcess('zpool', ['destroy', '-f', p], { timeoutMs: 60_000 }).then(() => true, () => false);
        if (ok) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    await rm(dir, { recursive: true, force: true });
  }
}
