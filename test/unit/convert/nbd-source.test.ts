import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { nbdSource } from '../../../src/convert/nbd-source.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

describe('nbdSource: the URI decides TLS, never the presence of material', () => {
  const ca = '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n';
  it('takes nbds with a CA, nbd without', () => {
    assert.equal(nbdSource('nbds://h/x', { ca }).uri.tls, true);
    assert.equal(nbdSource('nbd://h/x').tls, undefined);
    assert.deepEqual(nbdSource('nbds+unix:///x?socket=/s', { ca, cert: 'c', key: 'k' }).tls, {
      ca,
      cert: 'c',
      key: 'k',
    });
  });
  it('refuses nbds without a CA, nbd with one, and a certificate without its key', () => {
    assert.throws(
      () => nbdSource('nbds://h/x'),
      (e: unknown) => isMamoriError(e, 'INVALID_INPUT') && /asks for TLS/.test(e.message),
    );
    assert.throws(
      () => nbdSource('nbd://h/x', { ca }),
      (e: unknown) => isMamoriError(e, 'INVALID_INPUT') && /plain NBD but TLS material/.test(e.message),
    );
    assert.throws(
      () => nbdSource('nbds://h/x', { ca, cert: 'c' }),
      (e: unknown) => isMamoriError(e, 'INVALID_INPUT'),
    );
    assert.throws(
      () => nbdSource('nbd://h/x?socket=/s'),
      (e: unknown) => isMamoriError(e, 'NBD_URI_INVALID'),
    );
  });
});
