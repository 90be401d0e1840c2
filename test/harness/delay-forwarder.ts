import { createServer, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { DelayLine } from './delay-line.js';

/*
 * The delay half of the WAN emulator (wan-link.ts), one process per forwarded port and
 * direction, run inside the middle namespace:
 *
 *   node dist/test/harness/delay-forwarder.js --listen 10.213.0.2:8443 --connect 10.213.0.2:8443 \
 *        --delay-ms 25 --max-buffer-bytes 1000000
 *
 * Accepts TCP on --listen, opens one upstream connection to --connect for each, and copies
 * both ways through a DelayLine of --delay-ms (RTT/2). Prints `listening` on stdout once ready.
 * The kernel has no sch_netem, hence userspace; the rate comes from tc tbf on the veths.
 *
 * What a site can tell apart from a real link: the TCP handshake with the forwarder completes
 * at once (so the first bytes are held until the SYN and SYN-ACK would have crossed: 1 RTT
 * after accept, plus the RTT/2 of the bytes themselves), and a refused upstream shows as a
 * reset after the connect instead of ECONNREFUSED.
 *
 * Signals: SIGUSR1 resets every open connection (both ends get RST, after RTT/2 for the far
 * one) and refuses new ones the same way until SIGUSR2: the 'reset' cut. SIGTERM closes all and exits.
 */

function hostPort(s: string, what: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(s);
  const port = Number(m?.[2]);
  if (!m || !(port > 0 && port < 65536)) throw new Error(`${what} must be HOST:PORT, got ${JSON.stringify(s)}`);
  return { host: m[1]!, port };
}

function positive(s: string | undefined, what: string): number {
  const n = Number(s);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${what} must be a number >= 0, got ${JSON.stringify(s)}`);
  return n;
}

// `node --test dist/test/` runs every file under test/ as a test file, this program too, with
// no arguments: it has nothing to test then. The harness always starts it with arguments.
if (process.argv.length <= 2) process.exit(0);
const { values } = parseArgs({
  options: {
    listen: { type: 'string' },
    connect: { type: 'string' },
    'delay-ms': { type: 'string' },
    'max-buffer-bytes': { type: 'string' },
    'read-batch-ms': { type: 'string' },
  },
  strict: true,
});
const listen = hostPort(values.listen ?? '', '--listen');
const upstream = hostPort(values.connect ?? '', '--connect');
const delayMs = positive(values['delay-ms'], '--delay-ms');
const maxBufferedBytes = Math.max(64 * 1024, positive(values['max-buffer-bytes'], '--max-buffer-bytes'));
const readBatchMs = positive(values['read-batch-ms'] ?? '0', '--read-batch-ms');

const open = new Set<{ client: Socket; up: Socket; lines: DelayLine[] }>();
let refusing = false;

/** Reset both sockets: `near` at once, `far` after the RST would have crossed the link. */
function resetPair(near: Socket, far: Socket, lines: DelayLine[]): void {
  for (const l of lines) l.stop();
  if (!near.destroyed) near.resetAndDestroy();
  setTimeout(() => {
    if (far.destroyed) return;
    // resetAndDestroy() on a socket that never connected waits for a connect that will not come.
    if (far.pending) far.destroy();
    else far.resetAndDestroy();
  }, delayMs).unref();
}

const server = createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
  if (refusing) {
    client.resetAndDestroy();
    return;
  }
  const accepted = performance.now();
  const up = new Socket({ allowHalfOpen: true });
  up.setNoDelay(true);
  const toUp = new DelayLine(client, up, {
    delayMs,
    maxBufferedBytes,
    notBefore: accepted + 2 * delayMs,
    open: false,
    readBatchMs,
  });
  const toClient = new DelayLine(up, client, { delayMs, maxBufferedBytes, readBatchMs });
  const entry = { client, up, lines: [toUp, toClient] };
  open.add(entry);
  // The SYN reaches the far side RTT/2 after the client sent it.
  const connectTimer = setTimeout(() => up.connect(upstream.port, upstream.host), delayMs);
  up.once('connect', () => toUp.open());
  client.on('error', () => {
    clearTimeout(connectTimer);
    resetPair(client, up, entry.lines);
  });
  up.on('error', () => resetPair(up, client, entry.lines));
  const forget = (): void => {
    if (client.destroyed && up.destroyed) open.delete(entry);
  };
  client.on('close', () => {
    clearTimeout(connectTimer);
    // Normally both halves ended and the far side ends through its DelayLine; a client gone
    // before the upstream connect leaves nothing to end there.
    if (up.pending) up.destroy();
    forget();
  });
  up.on('close', forget);
});

server.on('error', (e) => {
  process.stderr.write(`delay-forwarder: ${e.message}\n`);
  process.exit(1);
});

process.on('SIGUSR1', () => {
  refusing = true;
  for (const e of open) resetPair(e.client, e.up, e.lines);
  open.clear();
});
process.on('SIGUSR2', () => {
  refusing = false;
});
process.on('SIGTERM', () => {
  server.close();
  for (const e of open) {
    for (const l of e.lines) l.stop();
    e.client.destroy();
    e.up.destroy();
  }
  process.exit(0);
});

server.listen(listen.port, listen.host, () => process.stdout.write('listening\n'));
