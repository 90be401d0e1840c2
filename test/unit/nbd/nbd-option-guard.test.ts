import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NbdOptionGuard } from '../../../src/nbd/nbd-option-guard.js';
import { NBD_MAGIC, NBD_OPT, encodeOption } from '../../../src/nbd/nbd-protocol.js';

const flags = Buffer.from([0, 0, 0, 3]);

function nameData(name: string, tail: Buffer = Buffer.alloc(2)): Buffer {
  const n = Buffer.from(name, 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(n.length);
  return Buffer.concat([len, n, tail]);
}

function request(): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(NBD_MAGIC.REQUEST, 0);
  return b;
}

/** Feeds `chunks` through a guard for `allowed`; what came out, or the error that ended it. */
async function run(allowed: string, chunks: Buffer[]): Promise<{ out: Buffer; error: Error | null }> {
  const g = new NbdOptionGuard(allowed);
  const out: Buffer[] = [];
  g.on('data', (c: Buffer) => out.push(c));
  const ended = new Promise<Error | null>((resolve) => {
    g.once('error', resolve);
    g.once('end', () => resolve(null));
  });
  for (const c of chunks) if (!g.destroyed) g.write(c);
  if (!g.destroyed) g.end();
  return { error: await ended, out: Buffer.concat(out) };
}

test('the options of one export pass, byte for byte, and transmission after GO passes unread', async () => {
  const wire = Buffer.concat([
    flags,
    encodeOption(NBD_OPT.STRUCTURED_REPLY, Buffer.alloc(0)),
    encodeOption(NBD_OPT.SET_META_CONTEXT, nameData('s1d0', Buffer.from([0, 0, 0, 0]))),
    encodeOption(NBD_OPT.GO, nameData('s1d0')),
    request(),
    Buffer.from('any payload at all, even one that looks like IHAVEOPT'),
  ]);
  // Split at every awkward place: one byte at a time.
  const bytes = [...wire].map((b) => Buffer.from([b]));
  const r = await run('s1d0', bytes);
  assert.equal(r.error, null);
  assert.deepEqual(r.out, wire);
});

test('a client naming another export, or listing them, is cut before the daemon sees the option', async () => {
  for (const option of [
    encodeOption(NBD_OPT.GO, nameData('s2d0')),
    encodeOption(NBD_OPT.INFO, nameData('')),
    encodeOption(NBD_OPT.SET_META_CONTEXT, nameData('s2d0', Buffer.from([0, 0, 0, 0]))),
    encodeOption(NBD_OPT.EXPORT_NAME, Buffer.from('s2d0')),
    encodeOption(NBD_OPT.LIST, Buffer.alloc(0)),
    encodeOption(NBD_OPT.STARTTLS, Buffer.alloc(0)),
    encodeOption(99, Buffer.alloc(0)),
  ]) {
    const r = await run('s1d0', [flags, option]);
    assert.ok(r.error, `refused: ${option.readUInt32BE(8)}`);
    assert.match(r.error.message, /own cycle's export/);
    assert.deepEqual(r.out, flags, 'nothing of the refused option reached the daemon');
  }
});

test('an option that claims more data than a client of one export needs is refused, not buffered', async () => {
  const header = Buffer.alloc(16);
  header.writeBigUInt64BE(NBD_MAGIC.IHAVEOPT, 0);
  header.writeUInt32BE(NBD_OPT.GO, 8);
  header.writeUInt32BE(0xffffffff, 12);
  const r = await run('s1d0', [flags, header]);
  assert.match(r.error?.message ?? '', /bytes of data/);
});

test('garbage where an option belongs is refused', async () => {
  const r = await run('s1d0', [flags, Buffer.alloc(16, 0x41)]);
  assert.match(r.error?.message ?? '', /not an option/);
});

test('a name length past the option data is refused', async () => {
  const data = Buffer.alloc(4);
  data.writeUInt32BE(50);
  const r = await run('s1d0', [flags, encodeOption(NBD_OPT.GO, data)]);
  assert.match(r.error?.message ?? '', /longer than its data/);
});
