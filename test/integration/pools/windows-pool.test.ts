import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { SiteProcess } from '../../harness/site-process.js';
import { mbrWindows2012 } from '../../harness/disk-fixtures.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { Job } from '../../../src/jobs/job-journal.js';
import type { PoolView } from '../../../src/pools/pool-views.js';

/*
 * A pool of a Windows master: the master is a converted Windows Server 2012 R2 disk (NTFS
 * with its registry hives), which the pool reads as Windows from the snapshot itself. Its
 * desktops' identity disks then carry PowerShell for cloudbase-init, with KMS activation.
 * No Windows boots here (none can be installed on this machine); what is proven is what the
 * site makes: the seed on each desktop's identity disk, read back with isoinfo and blkid.
 */
let site: SiteProcess;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-winpool-test-'));
  const win = await mbrWindows2012(dir);
  site = await SiteProcess.create('site-w');
  await site.start();
  const converted = await site.cliJson<Job>('convert', win, '--name', 'wingold');
  assert.equal(converted.state, 'succeeded', JSON.stringify(converted.error));
  await site.cliJson('vm', 'snapshot', 'wingold', 'v1');
  await site.cliJson('vm', 'create', 'lingold', '--test-guest', '--data-disk', '16M', '--memory', '64');
  await site.cliJson('vm', 'snapshot', 'lingold', 'v1');
});

after(async () => {
  if (site) await site.destroy();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function isoFile(iso: string, name: string): Promise<string> {
  return (await runProcess('isoinfo', ['-R', '-i', iso, '-x', `/${name}`], { timeoutMs: 30_000 })).stdout;
}

test('KMS options that cannot work are refused before anything is made', async () => {
  const bad = async (args: string[], re: RegExp): Promise<void> => {
    const r = await site.cli('pool', 'create', 'bad', '--snapshot', 'v1', '--size', '1', ...args);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, re);
  };
  await bad(
    ['--master', 'lingold', '--name', 'l-{n}', '--kms-host', 'kms.lab'],
    /KMS activation is for Windows desktops, and the master's snapshot holds no OS mamori recognizes.*\[INVALID_INPUT\]/,
  );
  await bad(
    ['--master', 'wingold', '--name', 'w-{n}', '--license-command', 'register'],
    /holds Windows, which activates through KMS: give --kms-host/,
  );
  await bad(['--master', 'wingold', '--name', 'w-{n}', '--kms-host', 'kms.lab:99999'], /is not HOST, HOST:PORT/);
  await bad(
    ['--master', 'wingold', '--name', 'windows-desktop-{n}', '--kms-host', 'kms.lab'],
    /longer than the 15 characters a Windows computer name may have/,
  );
  assert.deepEqual(await site.cliJson('pool', 'list'), []);
});

test("each desktop of a Windows master carries cloudbase-init's PowerShell: its hostname, the commands, then KMS activation", async () => {
  const job = await site.cliJson<Job>(
    'pool',
    'create',
    'wp',
    '--master',
    'wingold',
    '--snapshot',
    'v1',
    '--size',
    '2',
    '--name',
    'wd-{n}',
    '--kms-host',
    '10.213.7.7',
    '--license-timeout',
    '30',
    '--command',
    'reg add HKLM\\Software\\Lab /v Pool /d wp /f',
  );
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
  const pool = await site.cliJson<PoolView>('pool', 'show', 'wp');
  assert.equal(pool.spec.guestOs, 'windows', 'read from the snapshot: NTFS and its registry');
  assert.equal(pool.spec.kmsHost, '10.213.7.7');
  for (const d of ['wd-1', 'wd-2']) {
    const identity = (await site.cliJson<VmView>('vm', 'show', d)).disks.find((x) => x.name === `${d}-identity`)!.path;
    const probe = (await runProcess('blkid', ['-p', '-o', 'export', identity], { timeoutMs: 30_000 })).stdout;
    assert.match(probe, /^LABEL=cidata$/m, 'cloudbase-init finds the seed by its label');
    assert.match(probe, /^TYPE=iso9660$/m);
    assert.match(await isoFile(identity, 'meta-data'), new RegExp(`^local-hostname: ${d}$`, 'm'));
    const userData = await isoFile(identity, 'user-data');
    assert.ok(userData.startsWith('#ps1_sysnative\r\n'), userData.slice(0, 80));
    assert.match(userData, new RegExp(`Say 'start ${d}'`));
    assert.match(userData, /-Value 'reg add HKLM\\Software\\Lab \/v Pool \/d wp \/f'/);
    assert.match(userData, /\$kmsHost = '10\.213\.7\.7'; \$kmsPort = 1688; \$limit = 30/);
    assert.match(userData, /slmgr\.vbs/);
    assert.equal(
      await isoFile(identity, 'mamori-customize.ps1'),
      userData,
      'the script is also on the seed by its own name',
    );
  }
  const skip = await site.cliJson<Job>(
    'pool',
    'create',
    'wp-lab',
    '--master',
    'wingold',
    '--snapshot',
    'v1',
    '--size',
    '1',
    '--name',
    'wl-{n}',
    '--kms-host',
    'kms.lab',
    '--skip-license-activation',
  );
  assert.equal(skip.state, 'succeeded');
  const identity = (await site.cliJson<VmView>('vm', 'show', 'wl-1')).disks.find(
    (x) => x.name === 'wl-1-identity',
  )!.path;
  assert.doesNotMatch(
    await isoFile(identity, 'user-data'),
    /slmgr|ConnectAsync/,
    '--skip-license-activation leaves the step out',
  );
  for (const p of ['wp', 'wp-lab']) assert.equal((await site.cliJson<Job>('pool', 'delete', p)).state, 'succeeded');
});
