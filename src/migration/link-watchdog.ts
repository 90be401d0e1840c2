import type { QmpClient } from '../qemu/qmp-client.js';
import { MamoriError } from '../core/mamori-error.js';
import type { Logger } from '../core/logger.js';
import type { IncomingTarget } from './migration-target.js';
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

/**
 * From the first mirrored block to `completed`: the bytes mirrored, backed up and sent as
 * RAM, once a second. When none of them has grown for the link timeout the link counts as
 * cut: our connections to the destination are aborted so QEMU fails now instead of in a
 * quarter of an hour, and the migration stops with that reason (then rolls back).
 */
export function watchLink(
  log: Logger,
  qmp: QmpClient,
  target: IncomingTarget,
  timeoutSec: number,
  stopWith: (why: MamoriError, opts?: { noteOnly?: boolean }) => void,
): { stop(): void } {
  const dog = new LinkWatchdog(timeoutSec * 1000);
  let stopped = false;
  const tick = async (): Promise<void> => {
    while (!stopped) {
      const jobs = await qmp.execute('query-block-jobs', undefined, { timeoutMs: 5_000 }).catch(() => null);
      const mig = await qmp.execute('query-migrate', undefined, { timeoutMs: 5_000 }).catch(() => null);
      if (stopped) return;
      if (jobs && mig)
        dog.observe(
          jobs.filter((j) => j.device.startsWith('mig')).reduce((s, j) => s + j.offset, 0) +
            (mig.ram?.transferred ?? 0),
        );
      const quiet = dog.stalledFor();
      if (quiet !== null) {
        stopped = true;
        log.warn(
          { vm: target.vmId, quietMs: quiet },
          'nothing moved to the destination for the link timeout: aborting the connections to it',
        );
        const why = new MamoriError(
          'PEER_UNREACHABLE',
          `the link to the destination is cut: nothing moved for ${Math.round(quiet / 1000)} s (--link-timeout ${timeoutSec}); the migration is rolled back and the VM runs on at the source`,
        );
        // Noted first: the aborted connections make QEMU fail at once, and that failure says less.
        stopWith(why, { noteOnly: true });
        await abortConnections(target.host, [target.nbdPort, target.migrationPort]).catch((err: unknown) =>
          log.error({ err }, 'could not abort the connections to the destination'),
        );
        stopWith(why);
        return;
      }
      await new Promise((r) => setTimeout(r, 1_000));
    }
  };
  void tick();
  return { stop: () => void (stopped = true) };
}
