import { runProcess } from '../core/run-process.js';

/**
 * A cut link (packets dropped, not refused) does not fail a migration: QEMU's migration
 * stream and its NBD client block in send() until TCP gives up, which takes ~15 minutes, and
 * a write-blocking mirror stuck on an unacknowledged NBD write has nothing to time out.
 * So the source watches for progress itself, and when nothing has moved for the link
 * timeout it aborts its own connections to the destination's two endpoints (SOCK_DESTROY,
 * through `ss -K`): QEMU then sees ECONNABORTED at once, the migration fails, the mirrors
 * end with an error (the guest's own writes already succeeded on the source), and the
 * ordinary rollback runs. Only connections to this migration's ports are touched; they
 * were picked for it by the destination.
 */
export class LinkWatchdog {
  #last = -1;
  #lastChange = Date.now();
  #timeoutMs: number;

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs;
  }

  /** Feed the sum of everything that grows while data moves (bytes mirrored, RAM sent). */
  observe(total: number, now = Date.now()): void {
    if (total !== this.#last) {
      this.#last = total;
      this.#lastChange = now;
    }
  }

  /** Time without progress, once over the timeout; null while the link looks alive. */
  stalledFor(now = Date.now()): number | null {
    const quiet = now - this.#lastChange;
    return quiet >= this.#timeoutMs ? quiet : null;
  }

  /** A pause the watchdog must not count (e.g. waiting on our own side). */
  reset(now = Date.now()): void {
    this.#lastChange = now;
  }
}

/** `ss -K` filter arguments for connections to host:port (IPv6 addresses in brackets). */
export function killFilter(host: string, port: number): string[] {
  const dst = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return ['-K', 'dst', dst, 'dport', '=', String(port)];
}

/** Aborts this host's TCP connections to host:port (in this network namespace). */
export async function abortConnections(host: string, ports: number[]): Promise<void> {
  for (const port of ports) await runProcess('ss', killFilter(host, port), { timeoutMs: 10_000 });
}
