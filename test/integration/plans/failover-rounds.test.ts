import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { TwoSites } from '../../harness/two-sites.js';
import type { SiteProcess } from '../../harness/site-process.js';
import { parseSerialAcks } from '../../../src/guest/serial-log.js';
import { runProcess } from '../../../src/core/run-process.js';
import type { VmView } from '../../../src/vms/vm-service.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';
import type { ReplicaSummary } from '../../../src/replication/replica-service.js';

/*
 * Five failover/failback rounds of one writing test guest (`vm failover --planned` with
 * reprotect, from site-a to site-b and back), real QEMU at two sites. Each reprotect leaves a
 * seed under the new replica (the old disk, and through it the previous round's chain);
 * compaction absorbs it once the replica has a point and deletes the retired replica, so
 * the chain a VM reads and the bytes both sites hold stay bounded instead of growing with
 * every round. Ground truth for the data: the guest's write log on its final disk.
 */
let sites: TwoSites;
const cli = <T>(w: 'a' | 'b', ...args: string[]) => sites.cliJson<T>(w, ...args);

before(async () => {
  sites = await TwoSites.create();
  await sites.pairBothWays();
  for (const [w, peer] of [
    ['a', 'site-b'],
    ['b', 'site-a'],
  ] as const) {
    await cli(w, 'network', 'create', 'testnet', '--isolated');
    await cli(w, 'mapping', 'set', '--peer', peer, 'network', 'user', 'user', '--test', 'testnet');
    await cli(w, 'mapping', 'set', '--peer', peer, 'pool', 'default', 'default');
  }
});
after(async () => {
  await sites?.destroy();
});

/** Bytes allocated under a folder (replicas, recovered VMs' overlays): what the site holds for the VM. */
async function allocatedUnder(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += await allocatedUnder(p);
    else if (e.isFile()) n += (await stat(p)).blocks * 512;
  }
  return n;
}

interface Figures {
  replicas: number;
  chain: number;
  vmChain: number;
  bytes: number;
}

/** One site's figures: replicas held, their longest chain, the running VM's chain, bytes of replicas and pools. */
async function figures(w: 'a' | 'b', site: SiteProcess): Promise<Figures> {
  const held = await cli<ReplicaSummary[]>(w, 'replica', 'list');
  const vm = (await cli<VmView[]>(w, 'vm', 'list')).find((v) => v.name === 'fo');
  let vmChain = 0;
  if (vm?.state === 'running') {
    const info = await runProcess('qemu-img', ['info', '-U', '--backing-chain', '--output=json', vm.disks[0]!.path], {
      timeoutMs: 60_000,
    });
    vmChain = (JSON.parse(info.stdout) as unknown[]).length;
  }
  return {
    replicas: held.length,
    chain: Math.max(0, ...held.map((r) => r.storage.chainLength)),
    vmChain,
    bytes: (await allocatedUnder(join(site.dataDir, 'replicas'))) + (await allocatedUnder(join(site.dataDir, 'pools'))),
  };
}

async function failover(from: 'a' | 'b'): Promise<void> {
  const r = await sites.cli(from, 'vm', 'failover', 'fo', '--planned', '--json');
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 3000));
  const to = from === 'a' ? 'b' : 'a';
  const site = from === 'a' ? sites.b : sites.a;
  // The reverse replication's first point: compaction runs after it.
  await site.waitFor(
    'reverse point',
    async () => (await cli<ReplicationStatus>(to, 'replicate', 'status', 'fo')).lastPointAt,
    300_000,
  );
  await sites.cli(to, 'replicate', 'sync-now', 'fo');
  // Compaction of the new replica (at the site failed over from) ends with the retired replica gone.
  await (from === 'a' ? sites.a : sites.b).waitFor(
    'compaction',
    async () => {
      const held = await cli<ReplicaSummary[]>(from, 'replica', 'list');
      return (
        (held.every((r) => r.storage.seedBytes === 0) && held.filter((r) => r.state !== 'receiving').length === 0) ||
        undefined
      );
    },
    300_000,
  );
}

test('five failover/failback rounds: chains and storage stay bounded, and the log is whole', async () => {
  await cli('a', 'vm', 'create', 'fo', '--test-guest', '--data-disk', '32M', '--writelog-rate', '10');
  await cli('a', 'vm', 'start', 'fo');
  await sites.a.waitFor(
    'fo heartbeat',
    async () => (await cli<VmView>('a', 'vm', 'show', 'fo')).lastHeartbeatAt,
    180_000,
  );
  await cli('a', 'replicate', 'enable', 'fo', '--to', 'site-b', '--rpo', '1h', '--points', '3');
  await sites.a.waitFor(
    'first point',
    async () => (await cli<ReplicationStatus>('a', 'replicate', 'status', 'fo')).lastPointAt,
    180_000,
  );

  const rounds: { a: Figures; b: Figures }[] = [];
  const acked: number[] = [];
  for (let round = 1; round <= 5; round++) {
    await failover('a');
    await failover('b');
    const vm = await cli<VmView>('a', 'vm', 'show', 'fo');
    assert.equal(vm.state, 'running');
    await sites.a.waitFor(
      'writes at site-a',
      async () => parseSerialAcks(await readFile(vm.serialLog, 'utf8')).length >= 3 || undefined,
      120_000,
    );
    acked.push(Math.max(...parseSerialAcks(await readFile(vm.serialLog, 'utf8'))));
    rounds.push({ a: await figures('a', sites.a), b: await figures('b', sites.b) });
    process.stderr.write(`round ${round}: ${JSON.stringify(rounds.at(-1))}\n`);
  }

  // Bounded, not growing. After a round each site holds the replica it receives into and the
  // one the VM runs on (promoted) or none: never the retired ones of earlier rounds. The chain
  // is seed-free (base + at most 3 points, the retention), and the running VM reads its
  // overlay over one such chain. Bytes: round 5 within round 2's plus 16 MiB, half the data
  // disk: one round's new guest writes (10 records/s for a few minutes, under 4 MiB) and
  // qcow2 metadata and cluster rounding of a rebuilt base; one stacked round would add the
  // whole 32 MiB disk's allocated data again.
  const slack = 16 * 2 ** 20;
  for (const w of ['a', 'b'] as const) {
    for (const r of rounds) {
      assert.ok(r[w].replicas <= 2, `site-${w} holds ${r[w].replicas} replicas`);
      assert.ok(r[w].chain <= 1 + 3, `site-${w}'s longest replica chain is ${r[w].chain} layers`);
    }
    assert.ok(
      rounds[4]![w].bytes <= rounds[1]![w].bytes + slack,
      `site-${w}: round 5 holds ${rounds[4]![w].bytes} bytes, round 2 ${rounds[1]![w].bytes}`,
    );
  }
  // Its overlay over the promoted replica's base and at most 3 points.
  for (const r of rounds)
    assert.ok(r.a.vmChain >= 2 && r.a.vmChain <= 1 + 1 + 3, `the running VM reads ${r.a.vmChain} layers`);

  // The data: every record the guest acknowledged in any round is on its final disk, gap-free.
  const vm = await cli<VmView>('a', 'vm', 'show', 'fo');
  await cli('a', 'vm', 'stop', 'fo', '--timeout', '60');
  const last = Math.max(...parseSerialAcks(await readFile(vm.serialLog, 'utf8')));
  const report = await cli<{ consistent: boolean; lastSequence: number }>('a', 'verify-writelog', vm.disks[0]!.path);
  assert.equal(report.consistent, true, JSON.stringify(report));
  assert.ok(
    acked.every((n, i) => i === 0 || n > acked[i - 1]!),
    `the guest wrote on in every round (${acked.join(', ')})`,
  );
  assert.ok(report.lastSequence >= last, `log holds ${report.lastSequence}, guest acknowledged ${last}`);
});
