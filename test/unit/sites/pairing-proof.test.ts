import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { hashToken, pairingKeyOf } from '../../../src/store/repos/token-repo.js';
import { pairingKeyFromToken, proofsEqual, replyProof, requestProof } from '../../../src/sites/pairing-proof.js';
import { normalizeFingerprint } from '../../../src/sites/cert-fingerprint.js';

const fpB = 'AA:'.repeat(31) + 'AA';
const fpA = 'BB:'.repeat(31) + 'BB';
const fpM = 'CC:'.repeat(31) + 'CC';

test('the peer checks a request proof with the pairing key it keeps sealed; the stored lookup hash is not that key', () => {
  const token = 'mamori_secret-admin-token';
  const fields = { peerFingerprint: fpB, callerFingerprint: fpA, callerName: 'site-a', nonce: 'n'.repeat(43) };
  const proof = requestProof(pairingKeyFromToken(token), fields);
  assert.ok(proofsEqual(requestProof(pairingKeyOf(token), fields), proof));
  assert.ok(!proofsEqual(requestProof(pairingKeyOf('mamori_other'), fields), proof), 'another token');
  // What the database keeps of a token (its sha256, the v1 key) makes no valid proof.
  assert.ok(
    !proofsEqual(requestProof(Buffer.from(hashToken(token), 'hex'), fields), proof),
    'the stored hash as the key',
  );
  assert.ok(
    !proofsEqual(requestProof(createHash('sha256').update(hashToken(token)).digest(), fields), proof),
    'the stored hash, hashed',
  );
  // The proof covers the CA the caller saw: one seen through a man in the middle cannot be relabelled.
  assert.ok(!proofsEqual(requestProof(pairingKeyFromToken(token), { ...fields, peerFingerprint: fpM }), proof));
  assert.ok(!proofsEqual(requestProof(pairingKeyFromToken(token), { ...fields, callerName: 'site-x' }), proof));
});

test('the reply proof binds the issued token and differs from a request proof', () => {
  const key = pairingKeyFromToken('t');
  const r = replyProof(key, {
    peerFingerprint: fpB,
    callerFingerprint: fpA,
    nonce: 'x',
    token: 'mamori_1',
    peerName: 'site-b',
  });
  assert.ok(
    !proofsEqual(
      r,
      replyProof(key, {
        peerFingerprint: fpB,
        callerFingerprint: fpA,
        nonce: 'x',
        token: 'mamori_2',
        peerName: 'site-b',
      }),
    ),
  );
  assert.ok(
    !proofsEqual(
      r,
      requestProof(key, { peerFingerprint: fpB, callerFingerprint: fpA, callerName: 'site-b', nonce: 'x' }),
    ),
  );
});

test('fingerprints are accepted with or without colons and a SHA256 prefix', () => {
  const hex = 'ab'.repeat(32);
  const want = 'AB:'.repeat(31) + 'AB';
  assert.equal(normalizeFingerprint(hex), want);
  assert.equal(normalizeFingerprint(`SHA256:${want.toLowerCase()}`), want);
  assert.equal(normalizeFingerprint(` sha256=${hex} `), want);
  assert.throws(() => normalizeFingerprint('AB:CD'), /64 hex digits/);
});
