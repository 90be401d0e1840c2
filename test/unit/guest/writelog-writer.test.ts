import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../../src/core/run-process.js';
import { compressSync } from 'lz4-napi';
import { writeLogPayloadOf } from '../../../src/guest/writelog-format.js';
import { parseSerialAcks, verifyWriteLog } from '../../../src/guest/writelog-verifier.js';
import { repoRoot } from '../../harness/repo-root.js';

// The C writer runs on the host here (against a plain file), so the C and the
// TypeScript sides of the format are checked against each other without a VM.

let dir: string;
let writer: string;
let hostBootId: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mamori-wl-writer-'));
  writer = join(dir, 'mamori-wl');
  await runProcess('gcc', [
    '-O2',
    '-Wall',
    '-Wextra',
    '-Werror',
    '-o',
    writer,
    join(repoRoot, 'src/guest/writelog-writer.c'),
  ]);
  hostBootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function disk(name: string, bytes: number): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, '');
  await truncate(path, bytes);
  return path;
}

async function run(args: string[]): Promise<string> {
  return (await runProcess(writer, ['--console', '-', ...args], { timeoutMs: 30_000 })).stdout;
}

test('records written by the C writer verify, and a second run appends after them', async () => {
  const path = await disk('append.raw', 1 << 20);
  const seqFile = join(dir, 'append.seq');
  const first = await run(['--count', '10', '--seq-file', seqFile, path, '0']);
  assert.deepEqual(parseSerialAcks(first), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.match(first, /^mamori-wl start resume_after=0 slots=256 rate=0$/m);
  assert.match(first, /^mamori-wl stopped last_seq=10$/m);
  assert.equal((await readFile(seqFile, 'utf8')).trim(), '10');

  const second = await run(['--count', '5', path, '0']);
  assert.match(second, /resume_after=10 /);
  assert.deepEqual(parseSerialAcks(second), [11, 12, 13, 14, 15]);

  const r = await verifyWriteLog(path);
  assert.equal(r.consistent, true);
  assert.equal(r.lastSequence, 15);
  assert.equal(r.gapFreePrefix, 15);
  assert.deepEqual(r.bootIds, [hostBootId]);
});

test('the writer fills the device, says so, and stops at its end', async () => {
  const path = await disk('full.raw', 64 * 4096 + 1000);
  const out = await run([path, '0']);
  assert.equal(parseSerialAcks(out).at(-1), 64);
  assert.match(out, /^mamori-wl full$/m);
  const again = await run([path, '0']);
  assert.deepEqual(parseSerialAcks(again), []);
  assert.match(again, /^mamori-wl full$/m);
  const r = await verifyWriteLog(path);
  assert.equal(r.lastSequence, 64);
  assert.equal(r.consistent, true);
});

test('a damaged record is overwritten: the writer continues after the last valid one', async () => {
  const path = await disk('repair.raw', 1 << 20);
  await run(['--count', '20', path, '0']);
  const fh = await import('node:fs/promises').then((m) => m.open(path, 'r+'));
  await fh.write(Buffer.from([0xee]), 0, 1, 14 * 4096 + 300); // seq 15
  await fh.close();
  const out = await run(['--count', '3', path, '0']);
  assert.match(out, /resume_after=14 /);
  assert.deepEqual(parseSerialAcks(out), [15, 16, 17]);
  const r = await verifyWriteLog(path);
  // 18..20 from the first run are still intact and follow on without a gap.
  assert.equal(r.lastSequence, 20);
  assert.equal(r.consistent, true);
});

test('SIGTERM stops the writer between records, at its rate', async () => {
  const path = await disk('signal.raw', 1 << 20);
  const child = spawn(writer, ['--console', '-', path, '50'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  try {
    await new Promise((r) => setTimeout(r, 300));
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => child.on('close', r));
    assert.equal(code, 0);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  const acks = parseSerialAcks(out);
  assert.ok(acks.length >= 2 && acks.length <= 40, `~15 records at 50/s in 0.3 s, got ${acks.length}`);
  assert.match(out, new RegExp(`^mamori-wl stopped last_seq=${acks.at(-1)}$`, 'm'));
  const r = await verifyWriteLog(path);
  assert.equal(r.lastSequence, acks.at(-1));
  assert.equal(r.consistent, true);
});

test('--payload text writes compressible records that verify, and either mode resumes the other', async () => {
  const path = await disk('text.raw', 1 << 20);
  const first = await run(['--count', '100', '--payload', 'text', path, '0']);
  assert.match(first, /^mamori-wl start resume_after=0 slots=256 rate=0 payload=text$/m);
  const second = await run(['--count', '10', path, '0']);
  assert.match(second, /resume_after=100 /);
  const third = await run(['--count', '10', '--payload', 'text', path, '0']);
  assert.match(third, /resume_after=110 /);
  const r = await verifyWriteLog(path);
  assert.equal(r.consistent, true);
  assert.equal(r.gapFreePrefix, 120);
  // The C writer and writeLogPayloadOf('text') agree byte for byte, and the text shrinks.
  const bytes = await readFile(path);
  const rec = bytes.subarray(41 * 4096, 42 * 4096);
  assert.ok(rec.subarray(48, 4088).equals(writeLogPayloadOf('text', 42)));
  const ratio = (100 * 4096) / compressSync(bytes.subarray(0, 100 * 4096)).length;
  assert.ok(ratio >= 2 && ratio <= 4, `lz4 ratio of the text payload: ${ratio.toFixed(2)}`);
  const rnd = bytes.subarray(100 * 4096, 110 * 4096);
  assert.ok(compressSync(rnd).length > rnd.length * 0.95, 'the random payload stays incompressible');
});

test('bad arguments are refused with a usage line', async () => {
  const r = await runProcess(writer, ['/dev/null', 'fast'], { okCodes: [2] });
  assert.match(r.stderr, /usage: mamori-wl/);
  const p = await runProcess(writer, ['--payload', 'zip', '/dev/null', '0'], { okCodes: [2] });
  assert.match(p.stderr, /--payload random\|text/);
});
