import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { runCli, SiteProcess } from '../../harness/site-process.js';
import { repoRoot } from '../../harness/repo-root.js';
import { ZfsFuse, type TestPool } from '../../harness/zfs-fuse.js';
import type { ConformanceRow } from '../../../src/adapters/conformance-suite.js';
import type { CompatGuide } from '../../../src/adapters/compat-guide.js';
import type { CompatReportRow } from '../../../src/adapters/storage-arrays.js';

/*
 * `mamori adapter test zfs` makes its own two scratch zpools, passes the conformance suite on
 * them, records its row in a compatibility guide and removes the pools; a site with the ZFS
 * adapter's array and a fixture adapter's array then hears from `compat check` that the first
 * is supported (by the shipped guide's row, recorded the same way) and the second is not, and why.
 * The harness runs the zfs-fuse daemon (shared with other test files) and makes the site's pool.
 */
const FAULT = join(repoRoot, 'test', 'fixtures', 'adapters', 'fault-adapter.mjs');
let zfs: ZfsFuse;
let a: TestPool;
let dir: string;
let site: SiteProcess | undefined;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-zfs-conformance-'));
  zfs = await ZfsFuse.acquire();
  a = await zfs.createPool('a');
});

after(async () => {
  if (site) await site.destroy();
  if (zfs) await zfs.release();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('the ZFS adapter passes the conformance suite on scratch pools it makes and removes, and the run records its row', async () => {
  const guide = join(dir, 'guide.json');
  await copyFile(join(repoRoot, 'compat', 'guide.json'), guide);
  const r = await runCli(['--json', 'adapter', 'test', 'zfs', '--record', guide]);
  const rows = JSON.parse(r.stdout) as ConformanceRow[];
  assert.deepEqual(
    rows.filter((x) => x.result !== 'pass'),
    [],
    r.stderr,
  );
  assert.equal(r.code, 0);
  assert.ok(rows.length >= 15, `${rows.length} steps`);
  assert.match(
    rows.find((x) => x.step.startsWith('syncOnce (incremental'))!.detail,
    /^2\d{6} bytes$/,
    'about 2 MiB for 2 MiB changed',
  );
  const recorded = (JSON.parse(await readFile(guide, 'utf8')) as CompatGuide).entries.filter(
    (e) => e.adapter === 'zfs',
  );
  assert.equal(recorded.length, 1);
  assert.equal(recorded[0]!.conformance.result, 'pass');
  assert.equal(recorded[0]!.conformance.failed, 0);
  const pools = (await runProcess('zpool', ['list', '-H', '-o', 'name'], { timeoutMs: 30_000 })).stdout;
  assert.doesNotMatch(pools, /mamori-scratch-/, `its scratch pools are gone: ${pools}`);

  const broken = join(dir, 'broken.json');
  await writeFile(broken, '{"format":1,"entries":[');
  const refused = await runCli(['adapter', 'test', 'zfs', '--record', broken]);
  assert.match(
    refused.stderr,
    /compatibility guide .*broken\.json does not parse/,
    'a guide that does not parse stops the run before it starts',
  );
  assert.doesNotMatch(refused.stdout, /passed/, 'no suite ran');
});

test('compat check: the zfs-fuse arrays are supported by the shipped guide, a model it does not list is not', async () => {
  site = await SiteProcess.create('site-compat');
  await site.start();
  await site.cliJson(
    'array',
    'add',
    'zfs-a',
    '--adapter',
    'zfs',
    '--connection',
    `pools=${a.name}`,
    '--connection',
    'peerCommand=[]',
  );
  await site.cliJson('array', 'add', 'box', '--adapter', FAULT, '--connection', 'fault=none');
  const check = await site.cli('--json', 'compat', 'check');
  const rows = JSON.parse(check.stdout) as CompatReportRow[];
  const zfsRow = rows.find((r) => r.storage === 'zfs-a')!;
  assert.equal(zfsRow.supported, true, zfsRow.reason);
  assert.match(zfsRow.reason, /conformance passed on /);
  const boxRow = rows.find((r) => r.storage === 'box')!;
  assert.equal(boxRow.supported, false);
  assert.match(boxRow.reason, /FaultBox with the fault adapter is not in the compatibility guide/);
  assert.equal(check.code, 1, 'one unsupported array makes the check fail');
});
