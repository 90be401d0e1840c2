import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LinkWatchdog, killFilter } from '../../../src/migration/link-watchdog.js';

test('the link counts as cut only after the timeout passes with nothing moving', () => {
  const t0 = 1_000_000;
  const dog = new LinkWatchdog(10_000);
  dog.observe(100, t0);
  assert.equal(dog.stalledFor(t0 + 9_999), null);
  // Progress restarts the clock; the same total does not.
  dog.observe(200, t0 + 5_000);
  dog.observe(200, t0 + 14_000);
  assert.equal(dog.stalledFor(t0 + 14_999), null);
  assert.equal(dog.stalledFor(t0 + 15_000), 10_000);
  dog.reset(t0 + 20_000);
  assert.equal(dog.stalledFor(t0 + 25_000), null);
});

test('ss -K filters name exactly the destination address and port, IPv6 in brackets', () => {
  assert.deepEqual(killFilter('10.213.0.2', 40123), ['-K', 'dst', '10.213.0.2', 'dport', '=', '40123']);
  assert.deepEqual(killFilter('fd00::2', 5), ['-K', 'dst', '[fd00::2]', 'dport', '=', '5']);
  assert.deepEqual(killFilter('[fd00::2]', 5), ['-K', 'dst', '[fd00::2]', 'dport', '=', '5']);
});
