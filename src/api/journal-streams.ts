import type { FastifyPluginAsync } from 'fastify';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { MamoriError } from '../core/mamori-error.js';
import { errorResponses } from './schemas.js';
import { CompressedStream } from '../sites/compressed-stream.js';
import { JOURNAL_STREAM_PROTOCOL } from '../cdp/journal-shipping.js';

/*
 * Continuous replication's journal crosses to the recovery site as the cycles' data does
 * (cycle-streams.ts): `GET /replicas/ID/journal/disks/N/stream` with `Upgrade: mamori-journal`
 * and the source's site token, on the site API's HTTPS port. After the 101 the connection
 * carries journal shipping (cdp/journal-shipping.ts) in compressed frames; the caller is checked
 * by the same upgrade handler as a cycle stream's (installCycleStreams).
 */

export { JOURNAL_STREAM_PROTOCOL } from '../cdp/journal-shipping.js';
export const JOURNAL_STREAM_ROUTE = '/replicas/:id/journal/disks/:disk/stream';
const PATTERN = /^\/replicas\/([A-Za-z0-9_-]{1,64})\/journal\/disks\/(\d{1,3})\/stream$/;

/**
 * The replica and disk a journal stream request names, and (`?base=POINT`) the base point of the
 * session that sends it, or null when the path is not one.
 */
export function journalStreamPath(
  url: string | undefined,
): { id: string; disk: number; basePointId: string | null } | null {
  const u = new URL(url ?? '/', 'https://site');
  const m = PATTERN.exec(u.pathname);
  return m === null ? null : { id: m[1]!, disk: Number(m[2]), basePointId: u.searchParams.get('base') };
}

/** The route as the API lists it; without `Upgrade` it says what it is for. */
export function journalStreamRoutes(): FastifyPluginAsync {
  return async (app) => {
    app.get(
      JOURNAL_STREAM_ROUTE,
      {
        schema: {
          summary: `A continuous replica's journal stream for one disk (HTTP Upgrade to ${JOURNAL_STREAM_PROTOCOL} only)`,
          params: {
            type: 'object',
            required: ['id', 'disk'],
            properties: { id: { type: 'string' }, disk: { type: 'string' } },
          },
          response: { ...errorResponses },
        },
      },
      async () => {
        throw new MamoriError(
          'INVALID_INPUT',
          `this route only carries a journal stream: send "Connection: Upgrade" and "Upgrade: ${JOURNAL_STREAM_PROTOCOL}"`,
        );
      },
    );
  };
}

/** Answers 101 and hands the framed connection to `receive` (the replica's journal) until it ends. */
export async function serveJournalStream(
  socket: Socket,
  head: Buffer,
  receive: (wire: Duplex) => Promise<void>,
): Promise<void> {
  socket.setNoDelay(true);
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${JOURNAL_STREAM_PROTOCOL}\r\n\r\n`,
  );
  if (head.length > 0) socket.unshift(head);
  const wire = new CompressedStream(socket, { mode: 'auto' });
  wire.on('error', () => socket.destroy());
  socket.on('close', () => wire.destroy());
  await receive(wire);
  socket.destroy();
}
