import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TwoSites } from '../../harness/two-sites.js';
import { runCli, type SiteProcess } from '../../harness/site-process.js';
import { runProcess } from '../../../src/core/run-process.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';
import type { ReplicaSummary } from '../../../src/replication/replica-service.js';

/*
 * The replica lifecycle at the recovery site: `mamori replica list | show | delete`, the
 * refusals that keep a live replica, `replicate disable --delete-replica`, storage figures in
 * status and /metrics, and a deletion cut by a crash finished at the next start. The VMs stay
 * stopped (offline cycles): nothing here needs a guest to run.
 */
let sites: TwoSites;
const a = <T>(...args: string[]) => sites.cliJson<T>('a', ...args);
const b = <T>(...args: string[]) => sites.cliJson<T>('b', ...args);

before(async () => {
  sites = await TwoSites.create();
  await sites.pairBothWays();
});
after(async () => {
  await sites?.destroy();
});

/** GET /metrics from inside the site's network namespace (where its address is), as a scraper there would. */
async function scrape(site: SiteProcess): Promise<string> {
  const args = [
    '-sS',
    '--fail',
    '--cacert',
    site.caCertFile,
    '-H',
    `authorization: Bearer ${await site.adminToken()}`,
    new URL('/metrics', site.url).toString(),
  ];
  const [file, argv] = site.netns ? site.netns.wrap('curl', args) : ['curl', args];
  return (await runProcess(file, argv, { timeoutMs: 60_000 })).stdout;
}

async function replicaDirs(site: SiteProcess): Promise<string[]> {
  return (await readdir(join(site.dataDir, 'replicas')).catch(() => [] as string[])).filter(
    (n) => n.startsWith('rep') || n.startsWith('.deleting-'),
  );
}

async function replicated(vm: string): Promise<ReplicationStatus> {
  await a('vm', 'create', vm, '--test-guest', '--data-disk', '16M');
  await a('replicate', 'enable', vm, '--to', 'site-b', '--rpo', '1h', '--points', '2');
  await sites.a.waitFor(
    `first point of ${vm}`,
    async () => (await a<ReplicationStatus>('replicate', 'status', vm)).lastPointAt,
    300_000,
  );
  return a<ReplicationStatus>('replicate', 'status', vm);
}

test('list, show and the refusals; disable --delete-replica removes files and rows; storage in status and /metrics', async () => {
  const status = await replicated('lc');
  assert.ok(status.replica, 'status carries the replica storage after a commit');
  assert.equal(status.replica.points, 1);
  assert.ok(status.replica.bytes > 0 && status.replica.chainLength === 2, JSON.stringify(status.replica));
  const text = (await sites.cli('a', 'replicate', 'status', 'lc')).stdout;
  assert.match(text, /replica storage\s+1 points, chain of 2 layers, .* on disk/);

  const list = await b<ReplicaSummary[]>('replica', 'list');
  assert.equal(list.length, 1);
  const rep = list[0]!;
  assert.equal(rep.vmName, 'lc');
  assert.equal(rep.sourceSite, 'site-a');
  assert.equal(rep.state, 'receiving');
  assert.equal(rep.storage.points, 1);
  assert.deepEqual(rep.usedBy, { vms: [], replicas: [] });
  const shown = await b<ReplicaSummary>('replica', 'show', rep.id);
  assert.equal(shown.points.length, 1);
  assert.match(
    (await sites.cli('b', 'replica', 'list')).stdout,
    new RegExp(`${rep.id}\\s+lc\\s+site-a\\s+receiving\\s+1\\s+2`),
  );

  // A gauge per replica at the recovery site.
  const metrics = await scrape(sites.b);
  const bytesLine = metrics
    .split('\n')
    .find((l) => l.startsWith('mamori_replica_bytes{') && l.includes(`replica="${rep.id}"`));
  assert.ok(
    bytesLine && Number(bytesLine.split(' ').at(-1)) === rep.storage.bytes + rep.storage.seedBytes,
    bytesLine ?? metrics.slice(0, 2000),
  );
  assert.match(
    metrics,
    new RegExp(`mamori_replica_points\\{replica="${rep.id}",vm="lc",source_site="site-a",state="receiving"\\} 1`),
  );

  // The source still replicates into it: refused with what to do first; nothing changed.
  const refused = await sites.cli('b', 'replica', 'delete', rep.id);
  assert.notEqual(refused.code, 0);
  assert.match(
    refused.stderr,
    /site-a still replicates lc into replica .*mamori replicate disable lc --delete-replica.*\[REPLICA_SOURCE_ACTIVE\]/,
  );
  const forced = await sites.cli('b', 'replica', 'delete', rep.id, '--force');
  assert.match(forced.stderr, /REPLICA_SOURCE_ACTIVE/, '--force never overrides a source that answers');
  assert.deepEqual(await replicaDirs(sites.b), [rep.id]);
  const unknown = await sites.cli('b', 'replica', 'show', 'rep-nope');
  assert.match(unknown.stderr, /NOT_FOUND/);

  // A viewer reads the list but may not delete.
  const viewer = (await b<{ token: string }>('token', 'create', '--role', 'viewer', '--name', 'watcher')).token;
  const asViewer = (...args: string[]) =>
    runCli(
      args,
      { ...process.env, MAMORI_URL: sites.b.url, MAMORI_TOKEN: viewer, MAMORI_CA: sites.b.caCertFile },
      sites.b.netns,
    );
  const seen = await asViewer('replica', 'list', '--json');
  assert.equal(seen.code, 0, seen.stderr);
  assert.equal((JSON.parse(seen.stdout) as ReplicaSummary[]).length, 1);
  assert.match((await asViewer('replica', 'delete', rep.id)).stderr, /FORBIDDEN/);

  // Disabling with --delete-replica asks site-b to delete it: files and rows go together.
  await a('replicate', 'disable', 'lc', '--delete-replica');
  assert.deepEqual(await b<ReplicaSummary[]>('replica', 'list'), []);
  assert.deepEqual(await replicaDirs(sites.b), []);
  assert.doesNotMatch(await scrape(sites.b), /mamori_replica_bytes\{/);
  await a('vm', 'delete', 'lc');
});

test('a deletion cut by a crash after its folder was marked is finished at the next start', async () => {
  await replicated('cut');
  const [rep] = await b<ReplicaSummary[]>('replica', 'list');
  await a('replicate', 'disable', 'cut');
  await sites.b.stopServer();
  await sites.b.start({ MAMORI_FAULT_POINTS: 'replica-removal-marked:1' });
  const cut = await sites.cli('b', 'replica', 'delete', rep!.id);
  assert.notEqual(cut.code, 0, `the server died mid-deletion: ${cut.stdout}${cut.stderr}`);
  assert.ok(await sites.b.serverExited(60_000), `${cut.stderr}\n${sites.b.serverLog.slice(-3000)}`);
  assert.deepEqual(
    await replicaDirs(sites.b),
    [`.deleting-${rep!.id}`],
    'the folder was marked, the rows not yet removed',
  );
  await sites.b.start();
  assert.deepEqual(await b<ReplicaSummary[]>('replica', 'list'), []);
  assert.deepEqual(await replicaDirs(sites.b), []);
  await a('vm', 'delete', 'cut');
});
