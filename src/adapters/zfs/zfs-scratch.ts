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
    throw new MamoriError(
      'ADAPTER_FAILED',
      `ZFS does not answer on this host (${(e as Error).message.split('\n')[0]}): load the zfs module or start zfs-fuse, or give --config with arrays of your own`,
      { cause: e },
    );
  });
  const dir = await mkdtemp(join(tmpdir(), 'mamori-zfs-scratch-'));
  const tag = randomBytes(3).toString('hex');
  const pools: string[] = [];
  const shared = await makeSharedMount(dir);
  try {
    for (const side of ['a', 'b']) {
      const name = `mamori-scratch-${tag}-${side}`;
      const image = join(dir, `${side}.img`);
      await writeFile(image, '');
      await truncate(image, 512 * 1024 * 1024);
      await runProcess('zpool', ['create', '-o', 'cachefile=none', '-m', join(dir, `mnt-${side}`), name, image], {
        timeoutMs: 120_000,
      });
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
    const left: string[] = [];
    for (const p of pools) if (!(await destroyWaitingIfBusy(p))) left.push(p);
    if (left.length > 0) {
      // Their files stay: removing them under a live pool would leave it unremovable.
      process.stderr.write(
        `could not destroy the scratch pools ${left.join(', ')} (busy); remove them with 'zpool destroy -f NAME', then ${dir}\n`,
      );
    } else {
      if (shared) await runProcess('umount', [dir], { timeoutMs: 30_000 }).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    }
  }
}

/*
 * zfs-fuse answers "busy" for a while after files close (FUSE releases them late), and for
 * as long as another mount namespace holds a copy of a dataset's mount: every `ip netns
 * exec`, `unshare -m` or container started while the scratch pools are mounted makes one,
 * and where / is a private mount that copy is its own. The folder is therefore bound onto
 * itself and made shared, so such copies are slaves and the daemon's unmount reaches them
 * (as test/harness/zfs-fuse.ts does); busy is still waited out, up to a minute.
 */
async function makeSharedMount(dir: string): Promise<boolean> {
  try {
    await runProcess('mount', ['--bind', dir, dir], { timeoutMs: 30_000 });
  } catch {
    return false; // not root, or no mount: the pools still work, only their removal may wait
  }
  await runProcess('mount', ['--make-shared', dir], { timeoutMs: 30_000 }).catch(() => undefined);
  return true;
}

async function destroyWaitingIfBusy(pool: string): Promise<boolean> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ok = await runProcess('zpool', ['destroy', '-f', pool], { timeoutMs: 60_000 }).then(
      () => true,
      () => false,
    );
    if (ok) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 500));
  }
}
