import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { ByteQueue } from '../../../src/nbd/byte-queue.js';

test('a byte queue peeks and takes across the chunks it was given, in order', () => {
  const q = new ByteQueue();
  q.push(Buffer.from('ab'));
  q.push(Buffer.alloc(0));
  q.push(Buffer.from('cde'));
  q.push(Buffer.from('fghij'));
  assert.equal(q.length, 10);
  assert.equal(q.peek(1).toString(), 'a');
  assert.equal(q.peek(4).toString(), 'abcd', 'across two chunks, only what is asked');
  assert.equal(q.peek(10).toString(), 'abcdefghij');
  assert.equal(q.length, 10, 'a peek takes nothing');
  assert.throws(() => q.peek(11), RangeError);
  assert.equal(q.take(3).toString(), 'abc');
  assert.equal(q.peek(3).toString(), 'def');
  assert.equal(q.take(4).toString(), 'defg');
  assert.equal(q.length, 3);
  assert.throws(() => q.take(4), RangeError);
  assert.equal(q.drain().toString(), 'hij');
  assert.equal(q.length, 0);
});
