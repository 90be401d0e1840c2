import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SiteProcess, sleep } from '../../harness/site-process.js';

let site: SiteProcess;
/** The image comes from outside the site's data folder (which the site refuses as a source). */
let outside: string;
before(async () => {
  outside = await mkdtemp(join(tmpdir(), 'mamori-import-src-'));
  site = await SiteProcess.create();
  await site.start();
});
after(async () => {
  // A qemu-img orphaned by the killed server works on our folder only: find it by that path.
  for (const pid of await readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.startsWith('qemu-img') && cmd.includes(site.dataDir)) process.kill(Number(pid), 'SIGKILL');
  }
  await site.destroy();
  await rm(outside, { recursive: true, force: true });
});

test('a server killed during an import leaves no half image: the next start cleans up and fails the job', async () => {
  // 1 GiB of non-zero data: long enough to kill the server mid-copy.
  const source = join(outside, 'big.raw');
  const fh = await open(source, 'w');
  const chunk = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < chunk.length; i += 4096) chunk.writeUInt32LE(i + 1, i);
  for (let off = 0; off < 1024 * 1024 * 1024; off += chunk.length) await fh.write(chunk, 0, chunk.length, off);
  await fh.close();

  // The CLI follows the job until it ends; here the server dies under it.
  const importing = site.cli('disk', 'import', 'big', source);
  const pool = join(site.dataDir, 'pools', 'default');
  const temp = await site.waitFor(
    'the temporary import file',
    async () => (await readdir(pool).catch(() => [])).find((f) => f.endsWith('.importing')),
    30_000,
  );
  await site.crashServer();
  const cut = await importing;
  assert.notEqual(cut.code, 0);
  assert.match(cut.stderr, /\[SITE_UNREACHABLE\]/);
  await sleep(200);

  await site.start();
  const jobs = await site.cliJson<{ kind: string; state: string; error: { message: string } | null }[]>('job', 'list');
  const job = jobs.find((j) => j.kind === 'disk-import');
  assert.equal(job?.state, 'failed');
  assert.match(job?.error?.message ?? '', /stopped during the import of disk big; its temporary copy was removed/);
  assert.ok(!(await readdir(pool)).includes(temp), 'the temporary file is gone');
  assert.ok(!(await readdir(pool)).includes('big.qcow2'), 'no image under the disk name');
  assert.deepEqual(await site.cliJson('disk', 'list'), []);
  // The name is free again: the same import can be run to completion.
  const retry = await site.cliJson<{ state: string }>('disk', 'import', 'big', source);
  assert.equal(retry.state, 'succeeded');
});
