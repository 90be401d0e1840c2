import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { convergeCopy, type ConvergeAgent } from '../../../src/convert/p2v-converge.js';
import { parseMountInfoLine } from '../../../src/convert/p2v-freeze.js';
import { parseAgentUrl, helloProof } from '../../../src/convert/p2v-protocol.js';
import { pairingKeyFromToken } from '../../../src/sites/pairing-proof.js';
import type { P2vFreezeAnswer } from '../../../src/convert/p2v-protocol.js';

/*
 * The converging copy against an in-memory "device" that a writer changes between passes:
 * the checksums come from the device, the copy is a buffer written by offset. The copy must
 * end equal to the device, send only what changed, never send zero chunks, and say how
 * consistent it is.
 */
const CHUNK = 64 * 1024;

class FakeDevice implements ConvergeAgent {
  data: Buffer;
  /** Called before each checksum request: the writer's turn. */
  beforeChecksums: (call: number) => void = () => undefined;
  calls = 0;
  freezes = 0;
  thaws = 0;
  freezeAnswer: P2vFreezeAnswer = { frozen: ['/data'], thawAfterSeconds: 120 };
  constructor(size: number) {
    this.data = Buffer.alloc(size);
  }
  async checksums(span: { offset: number; length: number }, chunkSize: number): Promise<Buffer> {
    this.beforeChecksums(++this.calls);
    const out: Buffer[] = [];
    for (let o = span.offset; o < span.offset + span.length; o += chunkSize) {
      out.push(
        createHash('sha256')
          .update(this.data.subarray(o, Math.min(o + chunkSize, span.offset + span.length)))
          .digest(),
      );
    }
    return Buffer.concat(out);
  }
  async freeze(): Promise<P2vFreezeAnswer> {
    this.freezes++;
    return this.freezeAnswer;
  }
  async thaw(): Promise<void> {
    this.thaws++;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    return Buffer.from(this.data.subarray(offset, offset + length));
  }
}

class FakeTarget {
  data: Buffer;
  writes: number[] = [];
  zeroes: number[] = [];
  constructor(size: number) {
    this.data = Buffer.alloc(size);
  }
  async write(offset: number, d: Buffer): Promise<void> {
    this.writes.push(offset);
    d.copy(this.data, offset);
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.zeroes.push(offset);
    this.data.fill(0, offset, offset + length);
  }
  async flush(): Promise<void> {}
}

const size = 64 * CHUNK + 4096; // a last chunk cut short

test('a device changed during the first passes ends copied exactly; zero chunks are never sent', async () => {
  const dev = new FakeDevice(size);
  dev.data.fill(7, 0, 10 * CHUNK); // 10 chunks of data, the rest zeros
  dev.data.fill(9, size - 100);
  dev.beforeChecksums = (call) => {
    // The writer runs during passes 1 and 2: it changes chunk 3, fills chunk 40, and zeroes chunk 5.
    if (call === 2) {
      dev.data.fill(1, 3 * CHUNK, 3 * CHUNK + 10);
      dev.data.fill(2, 40 * CHUNK, 41 * CHUNK);
    }
    if (call === 3) dev.data.fill(0, 5 * CHUNK, 6 * CHUNK);
  };
  const target = new FakeTarget(size);
  const r = await convergeCopy(dev, dev, target, {
    sizeBytes: size,
    chunkSize: CHUNK,
    convergeBelowBytes: 0,
    maxPasses: 8,
  });
  assert.ok(target.data.equals(dev.data), 'the copy equals the device');
  assert.deepEqual(
    r.passes.map((p) => p.changedBytes),
    [10 * CHUNK + 4096, 2 * CHUNK, CHUNK, 0, 0],
  );
  assert.deepEqual(
    r.passes.map((p) => p.sentBytes),
    [10 * CHUNK + 4096, 2 * CHUNK, 0, 0, 0],
  );
  assert.deepEqual(target.zeroes, [5 * CHUNK], 'a chunk that became zero is written as zeros, not sent');
  assert.equal(r.consistency, 'frozen');
  assert.deepEqual(
    r.passes.map((p) => p.frozen),
    [false, false, false, false, true],
    'the quiet fourth pass ends the passes; the frozen check confirms',
  );
  assert.equal(dev.freezes, 1);
  assert.equal(dev.thaws, 1);
  assert.equal(r.bytesSent, 12 * CHUNK + 4096);
});

test('passes stop once the remainder is small, and the frozen last pass sends it', async () => {
  const dev = new FakeDevice(size);
  dev.data.fill(3);
  dev.beforeChecksums = (call) => {
    if (call === 2) dev.data.fill(4, 0, 2 * CHUNK);
    // Written after the passes stopped, before the freeze: the frozen pass must send it.
    if (call === 3) dev.data.fill(5, 9 * CHUNK, 10 * CHUNK);
  };
  const target = new FakeTarget(size);
  const r = await convergeCopy(dev, dev, target, {
    sizeBytes: size,
    chunkSize: CHUNK,
    convergeBelowBytes: 4 * CHUNK,
    maxPasses: 8,
  });
  assert.deepEqual(
    r.passes.map((p) => [p.changedBytes, p.frozen]),
    [
      [size, false],
      [2 * CHUNK, false],
      [CHUNK, true],
      [0, true],
    ],
    'passes stop at a remainder under 4 chunks',
  );
  assert.ok(target.data.equals(dev.data));
});

test('a device that cannot be frozen ends crash-consistent, and one that never stops changing says so', async () => {
  const dev = new FakeDevice(size);
  dev.freezeAnswer = { frozen: [], notFrozenBecause: 'nothing is mounted', thawAfterSeconds: 120 };
  const quiet = await convergeCopy(dev, dev, new FakeTarget(size), {
    sizeBytes: size,
    chunkSize: CHUNK,
    convergeBelowBytes: 0,
    maxPasses: 8,
  });
  assert.equal(quiet.consistency, 'crash-consistent');
  assert.match(quiet.note, /nothing is mounted/);
  assert.equal(dev.thaws, 0, 'nothing frozen, nothing to thaw');

  const busy = new FakeDevice(size);
  busy.beforeChecksums = (call) => busy.data.writeUInt32LE(call, (call % 60) * CHUNK);
  const r = await convergeCopy(busy, busy, new FakeTarget(size), {
    sizeBytes: size,
    chunkSize: CHUNK,
    convergeBelowBytes: 0,
    maxPasses: 3,
    finalChecks: 2,
  });
  assert.equal(r.passes.length, 5, '3 passes, then 2 checks of the last');
  assert.equal(r.consistency, 'changing');
  assert.match(r.note, /still changing/);
  assert.equal(busy.thaws, 1, 'thawed even though the copy never settled');
});

test('mountinfo lines, agent URLs and the hello proof', () => {
  assert.deepEqual(parseMountInfoLine('36 35 7:1 / /mnt/my\\040data rw,relatime shared:1 - ext4 /dev/loop1p5 rw'), {
    majorMinor: '7:1',
    mountPoint: '/mnt/my data',
    fsType: 'ext4',
    source: '/dev/loop1p5',
  });
  assert.equal(parseMountInfoLine('garbage'), null);
  assert.deepEqual(parseAgentUrl('nbd://10.0.0.5:10809'), { host: '10.0.0.5', port: 10809 });
  assert.deepEqual(parseAgentUrl('nbd://[fd00::1]:10809/'), { host: 'fd00::1', port: 10809 });
  assert.equal(parseAgentUrl('nbd://host'), null);
  assert.equal(parseAgentUrl('nbd://host:65535'), null, 'the control channel needs the next port');
  assert.equal(parseAgentUrl('http://host:80'), null);
  const k = pairingKeyFromToken('a-key-of-enough-length');
  assert.notEqual(
    helloProof(k, 'AA:BB', '00'.repeat(16)),
    helloProof(k, 'AA:BC', '00'.repeat(16)),
    'the proof names the CA',
  );
});
