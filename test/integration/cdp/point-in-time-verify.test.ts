import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { runProcess } from '../../../src/core/run-process.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { openStore } from '../../../src/store/open-store.js';
import type { Store } from '../../../src/store/store.js';
import { ReplicaRepo } from '../../../src/store/repos/replica-repo.js';
import { ReplicaService } from '../../../src/replication/replica-service.js';
import { ReplicaChain } from '../../../src/replication/replica-chain.js';
import { WriteJournal } from '../../../src/cdp/write-journal.js';
import { shipJournal } from '../../../src/cdp/journal-shipping.js';
import { encodeRecord, WL_RECORD_SIZE } from '../../../src/guest/writelog-format.js';
import { socketPair } from '../../harness/socket-pair.js';

const MiB = 1024 * 1024;
const SIZE = 4 * MiB;
const BOOT = '6a1f3c2e-0000-4000-8000-00000000cafe';

/*
 * Any-point verification at the recovery site, on real parts: a replica whose point was committed
 * through its real chain (qcow2 files), a journal shipped over a socket as the source ships it,
 * write-log records as the test guest writes them (slot = seq - 1), and the disk at each time read
 * through the point-in-time NBD server by qemu-img. Each answer is the log up to the checkpoint
 * the time rounds down to: a gap-free prefix, ending where that checkpoint does.
 */
describe('verify a continuous replica at a point in time', () => {
  let dir: string;
  let store: Store;
  let replicas: ReplicaService;
  let source: WriteJournal;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mamori-pit-verify-'));
    store = await openStore({ sqliteFile: join(dir, 'site.db') });
    replicas = new ReplicaService({ db: store.handle, dataDir: join(dir, 'site'), log: pino({ level: 'silent' }) });
    source = await WriteJournal.open(join(dir, 'source-journal'));
  });
  after(async () => {
    await replicas.shutdown();
    await source.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const record = (seq: number): Buffer => encodeRecord({ seq, timeNs: BigInt(Date.now()) * 1_000_000n, bootId: BOOT });

  it('each time reads the log up to the checkpoint at or before it, gap-free; retention keeps the base', async () => {
    const replica = await replicas.create({
      sourceSite: 'site-a',
      sourceVmId: 'vm1',
      vmName: 'one',
      disks: [{ index: 0, sizeBytes: SIZE }],
      keepPoints: 2,
    });
    await assert.rejects(
      replicas.verify(replica.id, undefined, Date.now() * 1000),
      (e) => isMamoriError(e, 'VM_INVALID_STATE') && /replicates in cycles/.test(e.message),
    );
    // The base point: records 1..10, committed through the chain as a cycle commits them.
    const chain = await ReplicaChain.open(join(dir, 'site', 'replicas', replica.id, 'disk0'));
    const staging = await chain.beginCycle();
    const first = join(dir, 'first.raw');
    await writeFile(first, Buffer.concat(Array.from({ length: 10 }, (_, k) => record(k + 1))));
    await runProcess('qemu-io', ['-f', 'qcow2', '-c', `write -s ${first} 0 ${10 * WL_RECORD_SIZE}`, staging.file], {
      timeoutMs: 60_000,
    });
    const point = await chain.commitCycle({ time: new Date().toISOString(), consistency: 'crash' });
    await new ReplicaRepo(store.handle).addPoint(replica.id, {
      pointId: 'pt1',
      time: point.time,
      consistency: 'crash',
      committedAt: point.committedAt,
      diskPoints: [point.id],
    });
    await replicas.beginJournal(replica.id, 'site-a', 'pt1');

    // The journal: records 11..40 as the guest writes them, a checkpoint after every fifth.
    const checkpoints: { timeUs: number; last: number }[] = [];
    for (let seq = 11; seq <= 40; seq++) {
      await source.appendWrite((seq - 1) * WL_RECORD_SIZE, record(seq));
      if (seq % 5 === 0) {
        const t = Math.max(Date.now() * 1000, source.lastTimeUs) + 1;
        await source.appendCheckpoint(0, t);
        checkpoints.push({ timeUs: t, last: seq });
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    const pair = await socketPair(dir, 'ship');
    const receive = await replicas.journalStream(replica.id, 0, 'site-a');
    const receiving = receive(pair.b);
    let acked = 0;
    const shipping = shipJournal(source, pair.a, { onAck: (s) => (acked = s) });
    while (acked !== source.durableSeq) await new Promise((r) => setTimeout(r, 10));

    await assert.rejects(
      replicas.verify(replica.id, undefined, checkpoints[0]!.timeUs - 1),
      (e) => isMamoriError(e, 'NOT_FOUND') && /no point in time at or before/.test(e.message),
    );
    const asked = [
      { at: checkpoints[0]!.timeUs, expect: checkpoints[0]! },
      { at: checkpoints[2]!.timeUs + 1, expect: checkpoints[2]! },
      { at: checkpoints[4]!.timeUs - 1, expect: checkpoints[3]! },
      { at: Date.now() * 1000 + 60e6, expect: checkpoints.at(-1)! },
    ];
    for (const { at, expect } of asked) {
      const v = await replicas.verify(replica.id, undefined, at);
      assert.equal(v.point.time, new Date(expect.timeUs / 1000).toISOString(), 'rounded down to the checkpoint');
      assert.equal(v.report.consistent, true, JSON.stringify(v.report));
      assert.equal(v.report.lastSequence, expect.last, `at ${at}: the log ends where its checkpoint does`);
      assert.equal(v.report.gapFreePrefix, expect.last);
    }

    // Cycles go on (keeping 2 points): retention would merge the journal's base point away, so it waits.
    for (let k = 0; k < 3; k++) {
      const cycle = await replicas.beginCycle(replica.id);
      await replicas.commitCycle(replica.id, cycle.cycleId, { time: new Date().toISOString(), consistency: 'crash' });
    }
    const kept = (await replicas.get(replica.id)).points.map((p) => p.id);
    assert.ok(kept.includes('pt1') && kept.length === 4, `the base point stays: ${kept.join(', ')}`);
    const again = await replicas.verify(replica.id, undefined, Date.now() * 1000);
    assert.equal(again.report.lastSequence, 40);

    pair.a.destroy();
    pair.b.destroy();
    pair.server.close();
    await Promise.all([receiving, shipping]);
  });
});
