import { X509Certificate } from 'node:crypto';
import { MamoriError } from '../core/mamori-error.js';

/**
 * SHA-256 fingerprints of certificates, in the form `openssl x509 -fingerprint -sha256`
 * and browsers print: upper-case hex pairs joined by colons.
 */
export function certFingerprint(pem: string | X509Certificate): string {
  const cert = typeof pem === 'string' ? parseCert(pem) : pem;
  return cert.fingerprint256;
}

/** Parses one PEM certificate; INVALID_INPUT when it is not one. */
export function parseCert(pem: string, what = 'certificate'): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (e) {
    throw new MamoriError('INVALID_INPUT', `the ${what} is not a PEM X.509 certificate: ${(e as Error).message}`);
  }
}

/**
 * Normalises a fingerprint an operator typed: with or without colons, any case, with an
 * optional `SHA256:`/`sha256=` prefix. Only SHA-256 (64 hex digits) is accepted.
 */
export function normalizeFingerprint(text: string): string {
  const hex = text
    .trim()
    .replace(/^sha-?256\s*[:=]\s*/i, '')
    .replace(/[:\s]/g, '')
    .toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex)) {
    throw new MamoriError(
      'INVALID_INPUT',
      `--fingerprint must be a SHA-256 fingerprint (64 hex digits, colons allowed), as 'mamori site ca' prints on the peer; got ${JSON.stringify(text)}`,
    );
  }
  return hex.match(/../g)!.join(':');
}
