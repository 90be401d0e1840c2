import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { IncomingMessage } from 'node:http';
import { createConnection, type NetConnectOpts, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import type { TokenRepo } from '../store/repos/token-repo.js';
import type { AuthFailureLimiter } from './auth-failure-limiter.js';
import { routeAccess } from './route-roles.js';
import { errorResponses } from './schemas.js';
import { NbdOptionGuard } from '../nbd/nbd-option-guard.js';
import { CompressedStream } from '../sites/compressed-stream.js';
import type { ReplicaService } from '../replication/replica-service.js';
import { CYCLE_STREAM_PROTOCOL } from '../replication/replica-cycle-server.js';
import {
  JOURNAL_STREAM_PROTOCOL,
  JOURNAL_STREAM_ROUTE,
  journalStreamPath,
  serveJournalStream,
} from './journal-streams.js';

export const CYCLE_STREAM_ROUTE = '/replicas/:id/cycles/:cycleId/disks/:disk/stream';
const PATTERN = /^\/replicas\/([A-Za-z0-9_-]{1,64})\/cycles\/([A-Za-z0-9_-]{1,64})\/disks\/(\d{1,3})\/stream$/;

/**
 * A replication cycle's data crosses to the recovery site on the site API's own HTTPS port:
 * the source asks `GET /replicas/ID/cycles/CYCLE/disks/N/stream` with `Upgrade: mamori-nbd`
 * and its site token, and from the 101 on the connection carries NBD to that disk's staging
 * export on the staging daemon's unix socket (staging-daemon.ts), in frames that are lz4
 * compressed when the link is slower than the compressor (sites/compressed-stream.ts).
 *
 * Why here and not QEMU's own NBD+TLS on a port of its own: Node decrypts about 4x faster
 * than the daemon's one main loop (notes/qemu-7.2.md: 180 MiB/s), one port crosses firewalls
 * and WAN links for everything between two sites, and the credentials are the API's (pinned
 * CA, site token), checked once, with no per-cycle certificate files.
 *
 * The same handler takes a continuous replica's journal stream (journal-streams.ts).
 *
 * The caller is checked as any route's (route-roles.ts: site tokens only, failures counted
 * by the limiter); the replica must be the calling site's and the cycle open; the NBD
 * handshake may name only this disk's export (NbdOptionGuard). Without `Upgrade`, the route
 * answers 426 so it is listed, documented and walked like the others.
 */
export function cycleStreamRoutes(): FastifyPluginAsync {
  return async (app) => {
    app.get(
      CYCLE_STREAM_ROUTE,
      {
        schema: {
          summary: `A cycle's NBD stream to one disk's staging (HTTP Upgrade to ${CYCLE_STREAM_PROTOCOL} only)`,
          params: {
            type: 'object',
            required: ['id', 'cycleId', 'disk'],
            properties: { id: { type: 'string' }, cycleId: { type: 'string' }, disk: { type: 'string' } },
          },
          response: { ...errorResponses },
        },
      },
      async () => {
        throw new MamoriError(
          'INVALID_INPUT',
          `this route only carries a replication cycle's NBD stream: send "Connection: Upgrade" and "Upgrade: ${CYCLE_STREAM_PROTOCOL}"`,
        );
      },
    );
  };
}

export function installCycleStreams(
  app: FastifyInstance,
  deps: { tokens: TokenRepo; authFailures?: AuthFailureLimiter; replicas: ReplicaService },
): void {
  app.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => undefined);
    void upgrade(req, socket as Socket, head, deps).catch((e: unknown) => refuse(socket, e));
  });
}

async function upgrade(
  req: IncomingMessage,
  socket: Socket,
  head: Buffer,
  deps: { tokens: TokenRepo; authFailures?: AuthFailureLimiter; replicas: ReplicaService },
): Promise<void> {
  const m = cycleStreamPath(req.url);
  const j = m === null ? journalStreamPath(req.url) : null;
  if (req.method !== 'GET' || (m === null && j === null))
    throw new MamoriError('NOT_FOUND', `no upgradable route ${req.method} ${req.url ?? ''}`);
  const [route, protocol] =
    m !== null ? [CYCLE_STREAM_ROUTE, CYCLE_STREAM_PROTOCOL] : [JOURNAL_STREAM_ROUTE, JOURNAL_STREAM_PROTOCOL];
  if ((req.headers.upgrade ?? '').toLowerCase() !== protocol)
    throw new MamoriError('INVALID_INPUT', `this route upgrades to ${protocol} only`);
  const ip = socket.remoteAddress ?? '';
  deps.authFailures?.check(ip);
  const header = req.headers.authorization;
  const token = header?.startsWith('Bearer ') ? header.slice(7).trim() : undefined;
  if (!token) throw new MamoriError('UNAUTHORIZED', 'missing API token: send "Authorization: Bearer TOKEN"');
  const who = await deps.tokens.verify(token);
  if (!who) {
    deps.authFailures?.failed(ip);
    throw new MamoriError('UNAUTHORIZED', 'the API token is not valid for this site (unknown, revoked or expired)');
  }
  const access = routeAccess('GET', route);
  if (access === undefined || access.roles === 'public' || !(access.roles as readonly string[]).includes(who.role))
    throw new MamoriError('FORBIDDEN', `GET ${route} needs a site token; the token sent is a ${who.role} token`);
  const caller = who.name.replace(/^site:/, '');
  if (m !== null) {
    const target = await deps.replicas.cycleStream(m.id, m.cycleId, m.disk, caller);
    await spliceCycleStream(socket, head, target);
  } else {
    const receive = await deps.replicas.journalStream(j!.id, j!.disk, caller, j!.basePointId);
    await serveJournalStream(socket, head, receive);
  }
}

/** The replica, cycle and disk a stream request names, or null when the path is not one. */
export function cycleStreamPath(url: string | undefined): { id: string; cycleId: string; disk: number } | null {
  const m = PATTERN.exec(new URL(url ?? '/', 'https://site').pathname);
  return m === null ? null : { id: m[1]!, cycleId: m[2]!, disk: Number(m[3]) };
}

/** Bytes a cycle stream may gather for the staging daemon before the pipe waits (see spliceCycleStream). */
const GATHER_BYTES = 4 * 1024 * 1024;
/** After a client's clean close, how long its last bytes may take to reach the daemon before its side is dropped. */
const CLOSE_GRACE_MS = 10_000;

/**
 * Joins an upgraded connection to a disk's staging export: connects to the daemon's socket,
 * answers 101, then pipes both ways with the option guard on the client's side.
 */
export async function spliceCycleStream(
  socket: Socket,
  head: Buffer,
  target: {
    socketPath: string;
    exportName: string;
    track(s: Socket): void;
    /** After a clean close, how long before the daemon's side is dropped (default CLOSE_GRACE_MS). */
    closeGraceMs?: number;
  },
): Promise<void> {
  // Room for what one turn of the event loop gathers (below): with the default 16 KiB the pipe
  // would pause the stream at the first record.
  // (Node's net.Socket takes a stream's options; its types do not list them.)
  const daemon = createConnection({ path: target.socketPath, writableHighWaterMark: GATHER_BYTES } as NetConnectOpts);
  await new Promise<void>((resolve, reject) => {
    daemon.once('connect', resolve);
    daemon.once('error', reject);
  });
  daemon.on('error', () => socket.destroy());
  socket.setNoDelay(true);
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${CYCLE_STREAM_PROTOCOL}\r\n\r\n`);
  // After the 101 both ways are framed, compressed when it pays (compressed-stream.ts).
  if (head.length > 0) socket.unshift(head);
  const wire = new CompressedStream(socket, { mode: 'auto' });
  const guard = new NbdOptionGuard(target.exportName);
  const cut = (): void => {
    socket.destroy();
    daemon.destroy();
  };
  guard.on('error', cut);
  wire.on('error', cut);
  // What arrives in one turn of the event loop goes to the daemon in one write. TLS hands its
  // 16 KiB records over one by one; a write each cost a system call and a wakeup of the daemon
  // per record. Registered before the pipe, so the first record of a turn is gathered too.
  let gathering = false;
  wire.on('data', () => {
    if (gathering) return;
    gathering = true;
    daemon.cork();
    setImmediate(() => {
      gathering = false;
      daemon.uncork();
    });
  });
  // Once the guard lets everything through it leaves the path: what it holds goes first, then
  // the stream goes straight to the daemon (a Transform per 16 KiB record is not free). A guard
  // that ends before (a client gone in its handshake) ends the daemon's side.
  let bypassed = false;
  guard.once('passthrough', () => {
    bypassed = true;
    wire.unpipe(guard);
    wire.pause();
    guard.end();
  });
  guard.once('end', () => (bypassed ? wire.pipe(daemon) : daemon.end()));
  wire.pipe(guard).pipe(daemon, { end: false });
  daemon.pipe(wire);
  socket.on('close', () => {
    // A cut drops the daemon's side at once: what it had not acknowledged is lost, with the
    // cycle. A client that closed cleanly may still have its last bytes in the splice (gathered,
    // or in the guard): the pipe ends the daemon's side once they are written.
    if (!socket.readableEnded) daemon.destroy();
    else setTimeout(() => daemon.destroy(), target.closeGraceMs ?? CLOSE_GRACE_MS).unref();
  });
  daemon.on('close', () => socket.destroy());
  target.track(socket);
}

/** An HTTP error answer in the API's one error shape, then the connection closes. */
function refuse(socket: Duplex, e: unknown): void {
  const err = isMamoriError(e)
    ? e
    : new MamoriError('INTERNAL', `the cycle stream failed: ${String((e as Error).message ?? e)}`);
  const body = JSON.stringify({ error: err.toJSON() });
  socket.end(
    `HTTP/1.1 ${err.httpStatus} Error\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}
