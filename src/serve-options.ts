import { MamoriError } from './core/mamori-error.js';
import { DEFAULT_PEER_CHECK_MS } from './sites/peer-watch.js';

/* What `mamori serve` reads from its command line and environment, checked before start-up. */

/** MAMORI_PEER_CHECK_MS: tests check peers every second or two instead of every 30 s. */
export function peerCheckFromEnv(): number {
  const text = process.env['MAMORI_PEER_CHECK_MS'];
  if (text === undefined || text === '') return DEFAULT_PEER_CHECK_MS;
  const ms = Number(text);
  if (!Number.isInteger(ms) || ms < 100 || ms > 3_600_000)
    throw new MamoriError(
      'OUT_OF_RANGE',
      `MAMORI_PEER_CHECK_MS must be a whole number of milliseconds from 100 to 3600000, got ${JSON.stringify(text)}`,
    );
  return ms;
}

/**
 * MAMORI_CDP_BACKLOG_BYTES: journal a continuous VM's session holds for a cut link before it
 * breaks and cycles take over (default 1 GiB; tests make it small to see the break).
 */
export function cdpBacklogFromEnv(): number | undefined {
  const text = process.env['MAMORI_CDP_BACKLOG_BYTES'];
  if (text === undefined || text === '') return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 65_536 || n > 2 ** 50)
    throw new MamoriError(
      'OUT_OF_RANGE',
      `MAMORI_CDP_BACKLOG_BYTES must be a whole number of bytes, at least 65536, got ${JSON.stringify(text)}`,
    );
  return n;
}

export function parseListen(text: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !m[1] || port > 65535)
    throw new MamoriError(
      'INVALID_INPUT',
      `--listen must be HOST:PORT (e.g. 127.0.0.1:8443), got ${JSON.stringify(text)}`,
    );
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}
