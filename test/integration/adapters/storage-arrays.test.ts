import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SiteProcess } from '../../harness/site-process.js';
import { repoRoot } from '../../harness/repo-root.js';
import type { CompatReportRow, StorageArrayView } from '../../../src/adapters/storage-arrays.js';

/*
 * Storage array entries through the site's API and CLI, with a fixture adapter: an entry is
 * kept only if its adapter answers; a broken adapter leaves nothing behind; `compat check`
 * says for each array whether it is supported and why not.
 */
const FAULT = join(repoRoot, 'test', 'fixtures', 'adapters', 'fault-adapter.mjs');
let site: SiteProcess;

before(async () => {
  site = await SiteProcess.create('site-arrays');
  await site.start();
});

after(async () => {
  if (site) await site.destroy();
});

test('array entries: kept only when the adapter answers; compat check names what is not supported', async () => {
  const lab = await site.cliJson<StorageArrayView>(
    'array',
    'add',
    'lab',
    '--adapter',
    FAULT,
    '--connection',
    'fault=none',
    '--connection',
    'password=hunter2',
  );
  assert.deepEqual(
    lab.arrays.map((a) => [a.id, a.model]),
    [['arr1', 'FaultBox']],
  );
  assert.deepEqual(
    lab.connection,
    { fault: 'none', password: '***' },
    'a value the adapter declares secret is never shown back',
  );
  const refuse = async (args: string[], re: RegExp): Promise<void> => {
    const r = await site.cli('array', 'add', ...args);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, re);
  };
  await refuse(
    ['odd', '--adapter', FAULT, '--connection', 'colour=red'],
    /takes no connection parameter colour; it takes fault, password.*\[INVALID_INPUT\]/,
  );
  await refuse(
    ['gone', '--adapter', '/nonexistent/adapter'],
    /no adapter at \/nonexistent\/adapter.*\[ADAPTER_NOT_FOUND\]/,
  );
  await refuse(
    ['broken', '--adapter', FAULT, '--connection', 'fault=malformed'],
    /stdout is not one JSON object.*\[ADAPTER_FAILED\]/,
  );
  await refuse(['lab', '--adapter', FAULT], /a storage array entry named lab exists/);
  await refuse(['x', '--adapter', FAULT, '--connection', 'novalue'], /--connection KEY=VALUE \(not "novalue"\)/);
  assert.deepEqual(
    (await site.cliJson<StorageArrayView[]>('array', 'list')).map((a) => [a.name, a.connection]),
    [['lab', { fault: 'none', password: '***' }]],
    'refused entries left nothing behind; the secret stays masked',
  );

  const devices = await site.cliJson<{ arrayId: string; devices: { id: string }[] }[]>('array', 'devices', 'lab');
  assert.deepEqual(
    devices.map((a) => [a.arrayId, a.devices.map((d) => d.id)]),
    [['arr1', ['ghost']]],
  );

  const check = await site.cli('--json', 'compat', 'check');
  assert.equal(check.code, 1, 'an unsupported array makes compat check fail');
  const rows = JSON.parse(check.stdout) as CompatReportRow[];
  assert.deepEqual(
    rows.map((r) => [r.storage, r.arrayId, r.supported]),
    [['lab', 'arr1', false]],
  );
  assert.match(rows[0]!.reason, /FaultBox with the fault adapter is not in the compatibility guide/);

  await site.cli('array', 'remove', 'lab');
  assert.deepEqual(await site.cliJson('array', 'list'), []);
  const gone = await site.cli('array', 'remove', 'lab');
  assert.match(gone.stderr, /no storage array entry named lab.*\[NOT_FOUND\]/);
});
