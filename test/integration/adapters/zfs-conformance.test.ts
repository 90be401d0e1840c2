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
 * `mamori adapter test zfs` passes on two scratch zfs-fuse pools and records its row in a
 * compatibility guide; a site with the ZFS adapter's arrays and a fixture adapter's array
 * then hears from `compat check` that the first are supported (by the shipped guide's row,
 * recorded the same way) and the second is not, and why.
 */
const FAULT = join(repoRoot, 'test', 'fixtures', 'adapters', 'fault-adapter.mjs');
let zfs: ZfsFuse;
let a: TestPool;
let b: TestPool;
let dir: string;
let site: SiteProcess | undefined;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-zfs-conformance-'));
  zfs = await ZfsFuse.acquire();
  a = await zfs.createPool('a');
  b = await zfs.createPool('b');
  await runProcess('zfs', ['create', `${a.name}/vmstore`], { timeoutMs: 60_000 });
  // How an operator starts replicating a dataset with the ZFS adapter (docs/adapters.md).
  await runProcess('zfs', ['set', `mamori:peer=${b.name}/vmstore`, `${a.name}/vmstore`], { timeoutMs: 60_000 });
});

after(async () => {
  if (site) await site.destroy();
  if (zfs) await zfs.release();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('the ZFS adapter passes the conformance suite, and the run records its row in the guide', async () => {
  const cfg = join(dir, 'arrays.json');
  await writeFile(cfg, JSON.stringify({
    source: { connection: { pools: a.name, peerCommand: '[]' }, arrayId: a.name, deviceId: 'vmstore' },
    target: { connection: { pools: b.name, peerCommand: '[]' }, arrayId: b.name },
  }));
  const guide = join(dir, 'guide.json');
  await copyFile(join(repoRoot, 'compat', 'guide.json'), guide);
  const r = await runCli(['--json', 'adapter', 'test', 'zfs', '--config', cfg, '--record', guide]);
  const rows = JSON.parse(r.stdout) as ConformanceRow[];
  assert.deepEqual(rows.filter((x) => x.result !== 'pass'), [], r.stderr);
  assert.equal(r.code, 0);
  assert.ok(rows.length >= 15, `${rows.length} steps`);
  assert.match(rows.find((x) => x.step.startsWith('syncOnce (incremental'))!.detail, /^2\d{6} bytes$/, 'about 2 MiB for 2 MiB changed');
  const recorded = (JSON.parse(await readFile(guide, 'utf8')) as CompatGuide).entries.filter((e) => e.adapter === 'zfs');
  assert.equal(recorded.length, 1);
  assert.equal(recorded[0]!.conformance.result, 'pass');
  assert.equal(recorded[0]!.conformance.failed, 0);

  const broken = join(dir, 'broken.json');
  await writeFile(broken, '{"format":1,"entries":[');
  const refused = await runCli(['adapter', 'test', 'zfs', '--config', cfg, '--record', broken]);
  assert.match(refused.stderr, /compatibility guide .*broken\.json does not parse/, 'a guide that does not parse stops the run before it starts');
});

test('`mamori adapter test zfs` alone makes its own scratch pools, passes, and removes them', async () => {
  const r = await runCli(['adapter', 'test', 'zfs']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /15 passed, 0 failed, 0 skipped/);
  const pools = (await runProcess('zpool', ['list', '-H', '-o', 'name'], { timeoutMs: 30_000 })).stdout;
  assert.doesNotMatch(pools, /mamori-scratch-/, `its scratch pools are gone: ${pools}`);
});

test('compat check: the zfs-fuse arrays are supported by the shipped guide, a model it does not list is not', async () => {
  site = await SiteProcess.create('site-compat');
  await site.start();
  await site.cliJson('array', 'add', 'zfs-a', '--adapter', 'zfs', '--connection', `pools=${a.name}`, '--connection', 'peerCommand=[]');
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
