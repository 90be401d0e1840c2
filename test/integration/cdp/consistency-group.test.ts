import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pairedSitesForFile } from '../../harness/two-sites.js';
import { AckSamples, verifyInstant, type VerifiedInstant } from '../../harness/continuous-guest.js';
import type { ReplicationStatus } from '../../../src/replication/replication-service.js';

/*
 * A consistency group of continuous VMs (issue 22): three test guests writing their logs at
 * site-a, in one protection group, journalled to site-b. The group's checkpoints are one instant
 * for all three: each journal lists the same times, and read back at an instant, each VM's log
 * is a gap-free prefix with everything it acknowledged before, cut at the same moment as the
 * others' (measured on the guests' own record times, each guest's clock offset taken out).
 */
const VMS = ['g1', 'g2', 'g3'];
const RATE = 50;

const sites = pairedSitesForFile();

const a = <T>(...args: string[]) => sites().cliJson<T>('a', ...args);

test('the continuous VMs of a protection group share every checkpoint: at each instant, all three disks are cut at once', async () => {
  const acks = new Map<string, AckSamples>();
  for (const vm of VMS) {
    await a('vm', 'create', vm, '--test-guest', '--data-disk', '64M', '--writelog-rate', String(RATE), '--guest-agent');
    acks.set(vm, new AckSamples((await a<{ serialLog: string }>('vm', 'start', vm)).serialLog));
  }
  for (const vm of VMS)
    await sites().a.waitFor(`${vm} writes`, async () => (await acks.get(vm)!.sample()) > 0 || undefined, 180_000);
  for (const vm of VMS)
    await a(
      'replicate',
      'enable',
      vm,
      '--to',
      'site-b',
      '--continuous',
      '--checkpoint',
      '1s',
      '--app-checkpoint',
      '10s',
    );
  await a('group', 'create', 'cg', ...VMS.flatMap((vm) => ['--vm', vm]));
  const sampling = setInterval(() => {
    for (const s of acks.values()) void s.sample();
  }, 100);
  try {
    // Sessions that began before the group existed begin again on the group's clock.
    for (const vm of VMS)
      await sites().a.waitFor(
        `${vm}'s session on the group clock`,
        async () => {
          const j = (await a<ReplicationStatus>('replicate', 'status', vm)).journal;
          return j?.state === 'streaming' && j.group === 'cg' && j.shippedAt !== null ? j : undefined;
        },
        240_000,
      );
    const from = new Date(Date.now() + 3_000).toISOString();
    const listed = await sites().a.waitFor(
      'twenty-two shared checkpoints, an application-consistent one among them',
      async () => {
        const lists = await Promise.all(
          VMS.map((vm) =>
            a<{ time: string; applicationConsistent: boolean }[]>(
              'replicate',
              'points',
              vm,
              '--between',
              from,
              new Date().toISOString(),
            ),
          ),
        );
        const common = lists[0]!.map((c) => c.time).filter((t) => lists.every((l) => l.some((c) => c.time === t)));
        const app = common.filter((t) => lists[0]!.find((c) => c.time === t)!.applicationConsistent);
        return common.length >= 22 && app.length > 0 ? { lists, common, app } : undefined;
      },
      240_000,
    );
    // One instant for all: the three journals list the same checkpoint times.
    const [l1, ...others] = listed.lists.map((l) => l.map((c) => c.time).filter((t) => t <= listed.common.at(-1)!));
    for (const l of others) assert.deepEqual(l, l1, 'the same checkpoints in every VM of the group');
    // The group's application-consistent checkpoints: its guests frozen together, one shared
    // instant labelled so in every VM's journal.
    for (const t of listed.app)
      for (const [i, l] of listed.lists.entries())
        assert.equal(l.find((c) => c.time === t)?.applicationConsistent, true, `${VMS[i]} at ${t}`);

    // Twenty instants: each VM reads back at the same checkpoint, gap-free, with everything it
    // acknowledged before; the guests' record times say where each disk was cut.
    const cuts: { vm: string; k: number; lagMs: number }[] = [];
    const firstMs = Date.parse(listed.common[0]!);
    const lastMs = Date.parse(listed.common.at(-1)!);
    for (let k = 0; k < 20; k++) {
      const at = new Date(firstMs + ((lastMs - firstMs) * (k + 0.5)) / 20).toISOString();
      const read: VerifiedInstant[] = [];
      for (const vm of VMS) read.push(await verifyInstant(sites().a, vm, at, acks.get(vm)!));
      assert.deepEqual(
        read.map((v) => v.point.time),
        VMS.map(() => read[0]!.point.time),
        `at ${at} every VM reads back at one instant`,
      );
      // An application-consistent instant cuts each disk where its guest froze (its writer
      // stopped by the freeze hook), not at the checkpoint: not a measure of the clock's cut.
      if (listed.app.includes(read[0]!.point.time)) continue;
      for (const [i, v] of read.entries()) {
        assert.ok(v.report.lastTime, `${VMS[i]} at ${at}: a last record`);
        cuts.push({ vm: VMS[i]!, k, lagMs: Date.parse(v.point.time) - Date.parse(v.report.lastTime!) });
      }
    }
    // Each guest's clock has its own offset from the host's: the median lag of its last record
    // behind the checkpoint takes it out. What remains, VM against VM at one instant, is how far
    // apart their disks were cut, plus the spacing of their records (1/RATE) and scheduling.
    const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    const offset = new Map(VMS.map((vm) => [vm, median(cuts.filter((c) => c.vm === vm).map((c) => c.lagMs))]));
    let widest = 0;
    for (let k = 0; k < 20; k++) {
      const at = cuts.filter((c) => c.k === k).map((c) => c.lagMs - offset.get(c.vm)!);
      if (at.length === 0) continue;
      widest = Math.max(widest, Math.max(...at) - Math.min(...at));
    }
    // A different checkpoint for one VM would show as a whole interval (1 s); the spread seen on
    // an idle machine is tens of ms (the note of the change gives the figures).
    console.log(`consistency group: widest spread of the three cuts over 20 instants: ${widest} ms`);
    assert.ok(widest < 500, `the three disks were cut ${widest} ms apart at one instant`);
  } finally {
    clearInterval(sampling);
  }
});
