import type { ReplicationRepo } from '../store/repos/replication-repo.js';
import { nextCycleAt } from './rpo-scheduler.js';

/**
 * The timer of each enabled replication: when its next cycle is due, as the RPO asks
 * (rpo-scheduler's nextCycleAt, from the row's last point, recent cycle times and failures).
 * Firing makes the VM due (SiteScheduler queues it; the queue decides when it starts). At
 * most one timer per VM; after stop() none is armed again, so no cycle begins while the
 * server closes.
 */
export class CycleSchedule {
  readonly #repo: ReplicationRepo;
  /** Makes the VM due; what follows (queue, cycle, failure) is not the timer's. */
  readonly #fire: (vmId: string) => Promise<void>;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #next = new Map<string, number>();
  #stopped = false;

  constructor(deps: { repo: ReplicationRepo; fire: (vmId: string) => Promise<void> }) {
    this.#repo = deps.repo;
    this.#fire = deps.fire;
  }

  /** Arms the VM's next cycle as its row asks, if the replication is enabled. */
  async fromRow(vmId: string, now: number): Promise<void> {
    if (this.#stopped) return;
    const row = await this.#repo.find(vmId);
    if (!row || row.state !== 'enabled') return;
    const at = nextCycleAt(
      {
        rpoMs: row.rpoMs,
        lastPointAt: row.lastPointAt ? Date.parse(row.lastPointAt) : null,
        recentCycleMs: row.stats.map((s) => s.durationMs),
        failures: row.failures,
        lastAttemptEndedAt: now,
      },
      now,
    );
    this.at(vmId, at);
  }

  /** Arms the VM's next cycle at `at` (epoch ms), replacing the one armed. */
  at(vmId: string, at: number): void {
    this.cancel(vmId);
    if (this.#stopped) return;
    this.#next.set(vmId, at);
    const t = setTimeout(() => void this.#fire(vmId).catch(() => undefined), Math.max(0, at - Date.now()));
    t.unref();
    this.#timers.set(vmId, t);
  }

  cancel(vmId: string): void {
    const t = this.#timers.get(vmId);
    if (t) clearTimeout(t);
    this.#timers.delete(vmId);
    this.#next.delete(vmId);
  }

  /** When the VM's next cycle is armed for (epoch ms), if one is. */
  nextAt(vmId: string): number | undefined {
    return this.#next.get(vmId);
  }

  stop(): void {
    this.#stopped = true;
    for (const id of [...this.#timers.keys()]) this.cancel(id);
  }
}
