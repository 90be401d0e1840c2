import type { StoreHandle } from '../store/store-handle.js';
import { ProtectionGroupRepo } from '../store/repos/protection-group-repo.js';
import type { Logger } from '../core/logger.js';
import { MamoriError } from '../core/mamori-error.js';
import { nextCycleAt, rpoStatus } from '../replication/rpo-scheduler.js';
import type { ArrayGroups } from './array-groups.js';
import type { Job, JobJournal } from '../jobs/job-journal.js';
import { defineJobKind, NO_CONTEXT } from '../jobs/job-kind.js';

import type { ArraySyncState } from '../store/records/protection-group-record.js';
// The sync state's record type lives in store/ (issue 20: protection_groups.array_sync has one codec there); re-exported here.
export type { ArraySyncState } from '../store/records/protection-group-record.js';

export interface ArraySyncView extends ArraySyncState {
  rpoSeconds: number | null;
  lagSec: number | null;
  rpoViolated: boolean;
}

/**
 * One sync of an array-based group, a job like a replication cycle: rollback, since nothing
 * at this site is half-made by a cut sync (the adapter's syncOnce either made its point at the
 * peer's array or not, and the next sync starts from the newest point both arrays hold).
 */
export const ARRAY_SYNC_JOB = defineJobKind<null>({
  kind: 'array-sync',
  policy: 'rollback',
  steps: ['sync', 'record'],
  summary: "One sync of an array-based group: the arrays' point and transfer (the adapter), then its record",
  context: NO_CONTEXT,
});
/** Finished sync jobs kept per group (a sync on a short RPO would fill the table). */
const KEEP_SYNC_JOBS = 20;

const EMPTY: ArraySyncState = {
  lastPointAt: null,
  lastPoint: null,
  lastBytesSent: null,
  failures: 0,
  lastError: null,
  lastAttemptEndedAt: null,
  recentMs: [],
};

/**
 * Array-based groups replicate on their RPO: the site asks the array for a point and its
 * transfer (the adapter's syncOnce) early enough that the peer's newest point is never older
 * than the RPO, as host-based replication schedules its cycles (same scheduler). Arrays with
 * their own schedule need no RPO (`group sync` or nothing). A group whose VMs were failed
 * over (superseded here) is not synced: its devices belong to the other site's run now.
 * One sync of a group at a time; manual and scheduled syncs share the queue.
 */
export class ArrayGroupSync {
  #repo: ProtectionGroupRepo;
  #groups: Pick<ArrayGroups, 'bindings' | 'binding' | 'sync' | 'failedOverElsewhere'>;
  #log: Logger;
  #jobs: JobJournal;
  #timers = new Map<string, NodeJS.Timeout>();
  #queues = new Map<string, Promise<unknown>>();
  #stopped = false;

  constructor(deps: {
    db: StoreHandle;
    groups: Pick<ArrayGroups, 'bindings' | 'binding' | 'sync' | 'failedOverElsewhere'>;
    jobs: JobJournal;
    log: Logger;
  }) {
    this.#repo = new ProtectionGroupRepo(deps.db);
    this.#groups = deps.groups;
    this.#log = deps.log;
    this.#jobs = deps.jobs;
    this.#jobs.define(ARRAY_SYNC_JOB, (job) => this.#recover(job));
  }

  /**
   * Policy rollback: nothing at this site is half-made. A point the adapter made and sent
   * before the stop stays on the arrays unrecorded (the adapter's retention owns it, and the
   * next sync starts from the newest point both hold); a point the record step wrote stays
   * recorded (it is on both arrays). The attempt is counted as failed in the group's state, as
   * #sync's catch does, so `group show` agrees with the job and the scheduler backs off.
   */
  async #recover(job: Job): Promise<string> {
    const name = job.target ?? '';
    const message = `the site server stopped during a sync of group ${name}; nothing here was half-made, the next sync starts from the newest point both arrays hold`;
    const row = await this.#row(name);
    if (row)
      await this.#save(name, {
        ...row.state,
        failures: row.state.failures + 1,
        lastError: message,
        lastAttemptEndedAt: new Date().toISOString(),
      });
    return message;
  }

  async start(): Promise<void> {
    this.#stopped = false;
    for (const g of await this.#groups.bindings()) await this.schedule(g.name);
  }

  stop(): void {
    this.#stopped = true;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
  }

  /** (Re)arms the group's timer from its state; a group without an RPO, or gone, has none. */
  async schedule(name: string): Promise<void> {
    clearTimeout(this.#timers.get(name));
    this.#timers.delete(name);
    if (this.#stopped) return;
    const row = await this.#row(name);
    if (!row) return;
    const rpoMs =
      row.binding.rpoSeconds === null || row.binding.rpoSeconds === undefined ? null : row.binding.rpoSeconds * 1000;
    if (rpoMs === null) return;
    const s = row.state;
    const at = nextCycleAt(
      {
        rpoMs,
        lastPointAt: s.lastPointAt ? Date.parse(s.lastPointAt) : null,
        recentCycleMs: s.recentMs,
        failures: s.failures,
        lastAttemptEndedAt: s.lastAttemptEndedAt ? Date.parse(s.lastAttemptEndedAt) : null,
      },
      Date.now(),
    );
    const timer = setTimeout(() => void this.#scheduled(name), Math.max(0, at - Date.now()));
    timer.unref();
    this.#timers.set(name, timer);
  }

  /** One sync now (`mamori group sync`), queued behind one in flight. */
  syncNow(name: string): Promise<{ devices: { id: string; point: string; bytesSent: number }[] }> {
    return this.#queued(name, async () => {
      await this.#groups.binding(name);
      return this.#sync(name);
    });
  }

  async status(name: string): Promise<ArraySyncView> {
    const row = await this.#row(name);
    if (!row)
      throw new MamoriError(
        'GROUP_NOT_FOUND',
        `no protection group named ${JSON.stringify(name)} on this site; see 'mamori group list'`,
        { details: { group: name } },
      );
    const rpoSeconds = row.binding.rpoSeconds ?? null;
    const st = rpoStatus(
      {
        rpoMs: (rpoSeconds ?? Infinity) * 1000,
        lastPointAt: row.state.lastPointAt ? Date.parse(row.state.lastPointAt) : null,
      },
      Date.now(),
    );
    return {
      ...row.state,
      rpoSeconds,
      lagSec: st.lagMs === null ? null : Math.round(st.lagMs / 100) / 10,
      rpoViolated: rpoSeconds !== null && st.violated,
    };
  }

  async #scheduled(name: string): Promise<void> {
    this.#timers.delete(name);
    await this.#queued(name, async () => {
      const row = await this.#row(name);
      if (!row || this.#stopped) return;
      if (await this.#groups.failedOverElsewhere(name)) {
        this.#log.info({ group: name }, 'array-based group not synced: its VMs were failed over to the peer');
        return;
      }
      await this.#sync(name).catch(() => undefined);
    }).catch((e: unknown) => this.#log.warn({ group: name, err: e }, 'array-based group sync failed'));
    await this.schedule(name).catch((e: unknown) =>
      this.#log.error({ group: name, err: e }, 'could not schedule an array-based group'),
    );
  }

  async #sync(name: string): Promise<{ devices: { id: string; point: string; bytesSent: number }[] }> {
    const row = await this.#row(name);
    const state = row?.state ?? EMPTY;
    const started = Date.now();
    const job = await this.#jobs.create(ARRAY_SYNC_JOB, name);
    try {
      const r = await this.#jobs.step(job.id, 'sync', () => this.#groups.sync(name));
      await this.#jobs.step(job.id, 'record', async () => {
        const now = Date.now();
        await this.#save(name, {
          lastPointAt: new Date(started).toISOString(),
          lastPoint: r.devices[0]?.point ?? null,
          lastBytesSent: r.devices.reduce((n, d) => n + d.bytesSent, 0),
          failures: 0,
          lastError: null,
          lastAttemptEndedAt: new Date(now).toISOString(),
          recentMs: [...state.recentMs, now - started].slice(-5),
        });
      });
      await this.#jobs.succeed(job.id, r);
      return r;
    } catch (e) {
      await this.#jobs.fail(job.id, {
        code: (e as { code?: string }).code ?? 'INTERNAL',
        message: (e as Error).message,
      });
      await this.#save(name, {
        ...state,
        failures: state.failures + 1,
        lastError: (e as Error).message,
        lastAttemptEndedAt: new Date().toISOString(),
      });
      throw e;
    } finally {
      await this.#jobs.prune(ARRAY_SYNC_JOB, name, KEEP_SYNC_JOBS).catch(() => undefined);
    }
  }

  /** Runs fn with no sync of the group in flight (the adapters' commands on one device do not overlap). */
  exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    return this.#queued(name, fn);
  }

  #queued<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#queues.get(name) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    this.#queues.set(name, next);
    return next;
  }

  async #save(name: string, state: ArraySyncState): Promise<void> {
    await this.#repo.setArraySync(name, state);
  }

  async #row(name: string): Promise<{ binding: { rpoSeconds?: number | null }; state: ArraySyncState } | null> {
    const r = await this.#repo.arraySync(name);
    if (!r) return null;
    return { binding: r.binding, state: r.state ?? EMPTY };
  }
}
