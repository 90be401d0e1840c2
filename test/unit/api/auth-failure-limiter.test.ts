import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AuthFailureLimiter } from '../../../src/api/auth-failure-limiter.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

function clock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

const refused = (e: unknown): boolean =>
  isMamoriError(e, 'TOO_MANY_AUTH_FAILURES') && e.httpStatus === 429 && e.retryable;

test('an address is refused after 10 failures within 60 s, and again let in when the window passes', () => {
  const c = clock();
  const limiter = new AuthFailureLimiter({ now: c.now });
  for (let i = 0; i < 10; i++) {
    limiter.check('10.0.0.1');
    limiter.failed('10.0.0.1');
    c.advance(1000);
  }
  assert.throws(
    () => limiter.check('10.0.0.1'),
    (e) => refused(e) && (e as { details: { retryAfterSeconds: number } }).details.retryAfterSeconds === 50,
  );
  limiter.check('10.0.0.2');
  c.advance(50_000);
  // The first failure left the window: one more try, and a failure refuses it again.
  limiter.check('10.0.0.1');
  limiter.failed('10.0.0.1');
  assert.throws(() => limiter.check('10.0.0.1'), refused);
  c.advance(60_001);
  limiter.check('10.0.0.1');
});

test('failures spread over more than the window never refuse', () => {
  const c = clock();
  const limiter = new AuthFailureLimiter({ now: c.now });
  for (let i = 0; i < 50; i++) {
    limiter.check('10.0.0.1');
    limiter.failed('10.0.0.1');
    c.advance(6_001);
  }
});

test('the map stays bounded: expired addresses go first, then the least recently failed', () => {
  const c = clock();
  const limiter = new AuthFailureLimiter({ now: c.now, maxAddresses: 100, maxFailures: 2 });
  for (let i = 0; i < 1000; i++) limiter.failed(`10.0.${i >> 8}.${i & 255}`);
  assert.equal(limiter.size, 100);
  limiter.failed('192.0.2.1');
  limiter.failed('192.0.2.1');
  assert.throws(() => limiter.check('192.0.2.1'), refused);
  c.advance(60_001);
  limiter.failed('192.0.2.9');
  assert.equal(limiter.size, 1, 'every address whose failures expired was forgotten');
});
