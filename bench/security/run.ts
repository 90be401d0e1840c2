/**
 * bench/security: the hostile-caller figures of issue 18, measured against a real site (SQLite,
 * qemu-img) in this process, written to bench/results/security.json.
 *
 * - routes_times_roles_checked: every operation of the OpenAPI document called with a token
 *   of every role and with none, each getting its declared answer (test/harness/route-walk.ts).
 * - hostile_inputs_tried / hostile_inputs_accepted: host paths (forbidden, missing, through
 *   symlinks and odd spellings, the data folder's own secrets) at every route that takes one,
 *   with every role; images whose headers point at a host file; plans built to knock the
 *   parser over; huge names. Accepted must be 0, and no answer may be a 500.
 * - objects_left_behind: files lost or orphaned after 20 rounds of 20 parallel requests at one
 *   name (test/harness/name-races.ts).
 * - fuzz_executions, fuzz_crashes, fuzz_hangs, slowest_input_ms: from bench/results/fuzz.json,
 *   which `make fuzz` writes (a million executions per parser take longer than a bench run);
 *   the date of that run is given.
 */
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSite } from '../../src/main.js';
import { runProcess } from '../../src/core/run-process.js';
import { openSqliteStore } from '../../src/store/sqlite/open-sqlite-store.js';
import { TokenRepo } from '../../src/store/repos/token-repo.js';
import { loadSecretKey } from '../../src/core/secret-box.js';
import { ROLES, type Role } from '../../src/core/roles.js';
import { repoRoot } from '../../test/harness/repo-root.js';
import { walkRoutesByRole } from '../../test/harness/route-walk.js';
import { raceAtOneName } from '../../test/harness/name-races.js';
import {
  markerFile,
  markerUnder,
  qcow2WithBacking,
  qcow2WithDataFile,
  qcow2WithJsonBacking,
  vhdxWithParent,
  vmdkWithFlatExtent,
} from '../../test/harness/untrusted-image-fixtures.js';

process.env['MAMORI_ACCEL'] = 'tcg';
const dir = await mkdtemp(join(tmpdir(), 'mamori-bench-security-'));
const exchange = join(dir, 'in');
await mkdir(exchange, { recursive: true });
const site = await openSite({
  dataDir: join(dir, 'data'),
  name: 'bench-security',
  hostPaths: { importDirs: [exchange] },
});
const tokens = {} as Record<Role, string>;
tokens.admin = (await readFile(site.paths.adminToken, 'utf8')).trim();
for (const role of ['operator', 'viewer'] as const) {
  tokens[role] = (
    await site.app.inject({
      method: 'POST',
      url: '/tokens',
      headers: { authorization: `Bearer ${tokens.admin}` },
      payload: { name: `b-${role}`, role },
    })
  ).json().token;
}
{
  const store = await openSqliteStore(site.paths.database);
  tokens.site = await new TokenRepo(store.handle, (await loadSecretKey(site.paths.secretKey, false)).box).create(
    'site:ghost',
    'site',
  );
  await store.close();
}

let tried = 0;
const accepted: string[] = [];
const serverErrors: string[] = [];
async function hostile(what: string, role: Role, method: 'POST' | 'PUT', url: string, payload: unknown): Promise<void> {
  const r = await site.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${tokens[role]}`, 'content-type': 'application/json' },
    payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
  });
  tried += 1;
  if (r.statusCode >= 500) serverErrors.push(`${what} as ${role}: ${r.statusCode}`);
  else if (r.statusCode < 400) accepted.push(`${what} as ${role}: ${r.statusCode}`);
  // A refusal never echoes a huge input back.
  if (r.body.length > 64 * 1024) accepted.push(`${what} as ${role}: a ${r.body.length}-byte answer`);
}

try {
  // Host paths: forbidden, missing, spelled oddly, through a symlink, the site's own secrets.
  const secret = await markerFile(join(exchange, 'host-secret.bin'));
  await symlink('/etc/shadow', join(exchange, 'shadow-link'));
  await symlink(site.paths.secretKey, join(exchange, 'key-link'));
  const paths = [
    '/etc/shadow',
    '/etc/./shadow',
    '//etc/shadow',
    '/etc/../etc/shadow',
    join(exchange, 'shadow-link'),
    join(exchange, 'key-link'),
    site.paths.database,
    site.paths.secretKey,
    site.paths.adminToken,
    join(site.paths.tlsDir, 'ca-key.pem'),
    '/dev/null',
    '/dev/zero',
    '/proc/self/environ',
    join(exchange, 'missing.qcow2'),
    'relative/path',
    `/${'a'.repeat(5000)}`,
  ];
  for (const role of ROLES) {
    for (const p of paths) {
      await hostile(`rdm ${p.slice(0, 40)}`, role, 'POST', '/disks', { name: 'h-rdm', rdm: { device: p } });
      await hostile(`import ${p.slice(0, 40)}`, role, 'POST', '/disks/import', { name: 'h-imp', source: p });
      await hostile(`inspect ${p.slice(0, 40)}`, role, 'POST', '/inspections', { source: p });
      await hostile(`convert ${p.slice(0, 40)}`, role, 'POST', '/conversions', { source: p, name: 'h-conv' });
      // A relative path inside the pool is an admin's to choose: only the others are hostile there.
      if (p.startsWith('/'))
        await hostile(`disk path ${p.slice(0, 40)}`, role, 'POST', '/disks', { name: 'h-path', size: '1M', path: p });
    }
  }
  // Images whose headers name a host file (the marker file sits in the exchange folder itself).
  const images = [
    await qcow2WithBacking(join(exchange, 'backing.qcow2'), secret),
    await qcow2WithJsonBacking(join(exchange, 'json.qcow2'), secret),
    await qcow2WithDataFile(join(exchange, 'datafile.qcow2'), secret),
    await vmdkWithFlatExtent(join(exchange, 'abs.vmdk'), secret),
    await mkdir(join(exchange, 'sub')).then(() =>
      vmdkWithFlatExtent(join(exchange, 'sub', 'rel.vmdk'), '../host-secret.bin'),
    ),
    await vhdxWithParent(join(exchange, 'diff.vhdx'), secret),
  ];
  for (const img of images) {
    await hostile(`import ${img}`, 'admin', 'POST', '/disks/import', { name: 'h-img', source: img });
    await hostile(`inspect ${img}`, 'admin', 'POST', '/inspections', { source: img });
    await hostile(`convert ${img}`, 'admin', 'POST', '/conversions', { source: img, name: 'h-img-vm' });
  }
  const leaked = await markerUnder(join(dir, 'data'));
  if (leaked.length > 0) accepted.push(`host file bytes reached the site: ${leaked.join(', ')}`);
  // Plans built to knock the parser over, and names built to be echoed.
  const keys = Array.from({ length: 90_000 }, (_, i) => `k${i}: ${i}`).join('\n');
  const chain = {
    name: 'chain',
    protectionGroups: ['g'],
    vms: Object.fromEntries(
      Array.from({ length: 20_000 }, (_, i) => [`vm${i}`, i ? { dependsOn: [`vm${i - 1}`] } : {}]),
    ),
  };
  const bomb = [
    'a: &a ["x","x","x","x","x","x","x","x","x","x"]',
    ...Array.from(
      { length: 9 },
      (_, i) =>
        `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10)
          .fill(`*${String.fromCharCode(97 + i)}`)
          .join(',')}]`,
    ),
  ].join('\n');
  const plans: [string, unknown][] = [
    ['90k keys', { yaml: `name: p\nprotectionGroups: [g]\nvms:\n${keys.replace(/^/gm, '  ')}` }],
    ['20k chain', { spec: chain }],
    ['__proto__', { yaml: 'name: p\nprotectionGroups: [g]\n__proto__: { polluted: true }\nvms: {}' }],
    ['constructor', { spec: JSON.parse('{"name":"p","protectionGroups":["g"],"vms":{"constructor":{"priority":1}}}') }],
    ['alias bomb', { yaml: bomb }],
    ['huge name', { yaml: `name: ${'n'.repeat(900_000)}\nprotectionGroups: [g]\nvms: {}` }],
  ];
  for (const [what, body] of plans) await hostile(`plan ${what}`, 'operator', 'POST', '/plans', body);
  for (const url of ['/vms', '/disks', '/tokens'])
    await hostile(`900 KB name at ${url}`, 'admin', 'POST', url, {
      name: 'n'.repeat(900_000),
      size: '1M',
      role: 'viewer',
    });

  const walk = await walkRoutesByRole(site.app, tokens);
  if (walk.failures.length > 0) throw new Error(`the route walk failed:\n${walk.failures.join('\n')}`);

  const source = join(exchange, 'race.qcow2');
  await runProcess('qemu-img', ['create', '-q', '-f', 'qcow2', source, '2M']);
  await site.app.inject({
    method: 'POST',
    url: '/vms',
    headers: { authorization: `Bearer ${tokens.admin}` },
    payload: { name: 'vrace', dataDisk: '1M', nics: [{ network: 'none' }] },
  });
  const race = await raceAtOneName(site.app, {
    token: tokens.admin,
    source,
    vm: 'vrace',
    database: site.paths.database,
    pool: join(dir, 'data', 'pools', 'default'),
    rounds: 20,
  });
  const raceErrors = [...race.statuses].filter(([, s]) => [...s].some((x) => x >= 500)).map(([w]) => w);

  const fuzz = JSON.parse(
    await readFile(join(repoRoot, 'bench', 'results', 'fuzz.json'), 'utf8').catch(() => 'null'),
  ) as FuzzResult | null;
  const figures = [
    {
      metric: 'routes_times_roles_checked',
      value: walk.checked,
      unit: 'calls',
      baseline: null,
      ratio: null,
      goal: 'every route x (4 roles + none)',
      met: walk.failures.length === 0,
    },
    {
      metric: 'hostile_inputs_tried',
      value: tried,
      unit: 'requests',
      baseline: null,
      ratio: null,
      goal: 'all refused, none a 500',
      met: accepted.length === 0 && serverErrors.length === 0,
    },
    {
      metric: 'hostile_inputs_accepted',
      value: accepted.length + serverErrors.length,
      unit: 'requests',
      baseline: null,
      ratio: null,
      goal: '0',
      met: accepted.length + serverErrors.length === 0,
    },
    {
      metric: 'objects_left_behind',
      value: race.lost.length + race.orphaned.length,
      unit: 'files',
      baseline: null,
      ratio: null,
      goal: '0',
      met: race.lost.length + race.orphaned.length === 0 && raceErrors.length === 0,
    },
    ...(fuzz ? fuzzFigures(fuzz) : []),
  ];
  await writeFile(
    join(repoRoot, 'bench', 'results', 'security.json'),
    `${JSON.stringify({ name: 'security', machine: '2 cores, TCG', date: new Date().toISOString(), figures, notes: { accepted, serverErrors, raceRequests: race.requests, fuzzRunAt: fuzz?.date ?? null } }, null, 2)}\n`,
  );
  process.stderr.write(
    `security: ${walk.checked} route x role calls; ${tried} hostile inputs, ${accepted.length} accepted, ${serverErrors.length} server errors; ${race.lost.length + race.orphaned.length} objects left behind\n`,
  );
  if (accepted.length + serverErrors.length > 0) process.stderr.write(`${[...accepted, ...serverErrors].join('\n')}\n`);
} finally {
  await site.close();
  await rm(dir, { recursive: true, force: true });
}

interface FuzzResult {
  date: string;
  figures: { metric: string; value: number }[];
  targets: { name: string; executions: number }[];
}

function fuzzFigures(f: FuzzResult) {
  const get = (m: string) => f.figures.find((x) => x.metric === m)?.value ?? null;
  // The goal is per parser: the fewest any target ran decides it.
  const perParser = Math.min(...f.targets.map((t) => t.executions));
  return [
    {
      metric: 'fuzz_executions',
      value: get('fuzz_executions'),
      unit: 'inputs',
      baseline: null,
      ratio: null,
      goal: '>= 1,000,000 per parser (make fuzz)',
      met: perParser >= 1_000_000,
      parsers: f.targets.length,
      fewestPerParser: perParser,
    },
    {
      metric: 'fuzz_crashes',
      value: get('fuzz_crashes'),
      unit: 'inputs',
      baseline: null,
      ratio: null,
      goal: '0',
      met: get('fuzz_crashes') === 0,
    },
    {
      metric: 'fuzz_hangs',
      value: get('fuzz_hangs'),
      unit: 'inputs',
      baseline: null,
      ratio: null,
      goal: '0',
      met: get('fuzz_hangs') === 0,
    },
    {
      metric: 'slowest_input_ms',
      value: get('slowest_input_ms'),
      unit: 'ms',
      baseline: null,
      ratio: null,
      goal: 'under the 2 s hang bound',
      met: (get('slowest_input_ms') ?? Infinity) < 2000,
    },
  ];
}
