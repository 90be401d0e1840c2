import { isMamoriError } from '../core/mamori-error.js';

/** How long a disaster run gives the protected site to answer before going on without it. */
export const PEER_PROBE_MS = 3_000;

/** Errors that mean "the protected site is not there", as opposed to it refusing. */
const UNREACHABLE = [
  'PEER_UNREACHABLE',
  'SITE_UNREACHABLE',
  'PEER_CERT_MISMATCH',
  'PEER_AUTH_FAILED',
  'NBD_CONNECT_FAILED',
];

/** Whether a disaster run may go on without the protected site after this error. */
export function peerIsGone(e: unknown): boolean {
  return isMamoriError(e) && (UNREACHABLE.includes(e.code) || e.retryable);
}
