import { strict as assert } from 'node:assert';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { bootProbeSector, probeAccelerator } from '../../../src/qemu/accel-probe.js';

/** Pids of processes whose command line mentions `needle` (a probe QEMU left behind would). */
async function processesMentioning(needle: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(needle)) found.push(Number(entry));
  }
  return found;
}

describe('accelerator probe with real QEMU', () => {
  let privateTmp: string;
  let savedTmp: string | undefined;
  before(async () => {
    privateTmp = await mkdtemp(join(tmpdir(), 'mamori-accel-it-'));
    savedTmp = process.env['TMPDIR'];
    process.env['TMPDIR'] = privateTmp; // so the probe's temp dirs land where we can check them
  });
  after(async () => {
    if (savedTmp === undefined) delete process.env['TMPDIR'];
    else process.env['TMPDIR'] = savedTmp;
    await rm(privateTmp, { recursive: true, force: true });
  });

  it('the probe sector prints its message under TCG', async (t) => {
    const r = await bootProbeSector({ accel: 'tcg', timeoutMs: 10_000 });
    t.diagnostic(`tcg boot: ${JSON.stringify(r)}`);
    assert.equal(r.printed, true, r.reason);
    assert.deepEqual(await readdir(privateTmp), [], 'temp dir removed');
    assert.deepEqual(await processesMentioning(privateTmp), [], 'probe QEMU gone');
  });

  it('MAMORI_ACCEL=tcg answers tcg without booting anything', async () => {
    const r = await probeAccelerator({ env: { MAMORI_ACCEL: 'tcg' } });
    assert.equal(r.accel, 'tcg');
    assert.match(r.reason, /MAMORI_ACCEL=tcg/);
  });

  it('the real probe answers kvm or tcg with a reason, within its timeout', async (t) => {
    const timeoutMs = 4000;
    const started = Date.now();
    const r = await probeAccelerator({ env: {}, timeoutMs });
    const wall = Date.now() - started;
    t.diagnostic(`real probe: ${JSON.stringify(r)} (wall ${wall} ms)`);
    assert.ok(r.accel === 'kvm' || r.accel === 'tcg');
    assert.ok(r.reason.length > 0);
    assert.ok(wall < timeoutMs + 3500, `took ${wall} ms`);
    assert.deepEqual(await readdir(privateTmp), [], 'temp dir removed');
    assert.deepEqual(await processesMentioning(privateTmp), [], 'probe QEMU gone');
  });
});
