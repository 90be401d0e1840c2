import type { ReplicationRecord } from '../store/records/replica-record.js';
import type { Logger } from '../core/logger.js';
import type { IncidentLog } from '../events/incident-log.js';
import type { WriteLogReport } from '../guest/writelog-verifier.js';
import { rpoStatus } from './rpo-scheduler.js';

import { CYCLE_FAILED, LINK_SATURATED, POINT_VERIFY_FAILED, RPO_VIOLATED } from '../events/incident-kinds.js';
import { saturationMessage, type BehindVm, type LinkLimit } from './link-saturation.js';

export { CYCLE_FAILED, LINK_SATURATED, POINT_VERIFY_FAILED, RPO_VIOLATED };

/** How often an open saturation incident is rewritten while the same VMs stay behind (their lags grow). */
const SATURATION_REWRITE_MS = 30_000;
/**
 * The least time between two rewrites of a saturation incident whose VMs changed. On a link
 * carrying about half its writes, the VMs behind change at nearly every check, as one commits
 * and another falls behind: the bench's 100 VMs rewrote the incident 325 times in 70 s. The
 * scheduler checks every 5 s, so the list stays at most that stale. A change of what holds the
 * link back (the remedy) is written at once.
 */
export const SATURATION_MIN_REWRITE_MS = 5_000;

/**
 * An RPO incident clears only once the VM has kept its RPO this long since it last broke it.
 * A replica that keeps up with an RPO at the edge of its link broke it for a moment at each
 * cycle: at `--rpo 1s` over 100 Mbit/s with 50 ms of round trip the 10-minute bench run
 * opened and cleared 732 incidents, an alert and its resolution each, which the person on
 * call learns to ignore. As the saturated link's incident (SATURATION_CLEAR_MS).
 */
export const RPO_CLEAR_MS = 30_000;

/**
 * The incidents of host-based replication, each opened once and cleared when its condition
 * ends (the RPO's after it has held for RPO_CLEAR_MS): a violated RPO (watched by a timer armed for the instant the newest point falls out
 * of the RPO, so it is noticed on time even while a cycle hangs), a failed cycle, and a
 * recovery point that failed its write-log check. The replication service says what
 * happened; this decides what is open.
 */
export class ReplicationIncidents {
  #incidents: IncidentLog;
  #log: Logger;
  #row: (vmId: string) => Promise<ReplicationRecord | undefined>;
  #vmName: (vmId: string) => Promise<string>;
  #journalAt: (vmId: string) => number | null;
  #watches = new Map<string, NodeJS.Timeout>();
  /** Per VM with an open RPO incident: when its RPO was last seen broken. */
  #brokenAt = new Map<string, number>();
  readonly #now: () => number;
  /** Per peer: the VMs the open saturation incident lists, and when it was last written. */
  #saturated = new Map<string, { vms: string; limitedBy: LinkLimit; at: number }>();
  #stopped = false;

  constructor(deps: {
    incidents: IncidentLog;
    log: Logger;
    row: (vmId: string) => Promise<ReplicationRecord | undefined>;
    vmName: (vmId: string) => Promise<string>;
    /** A continuous replica's newest point in time at the recovery site (ms), or null: newer than its last cycle's. */
    journalAt?: (vmId: string) => number | null;
    /** The clock (tests). */
    now?: () => number;
  }) {
    this.#now = deps.now ?? Date.now;
    this.#incidents = deps.incidents;
    this.#log = deps.log;
    this.#row = deps.row;
    this.#vmName = deps.vmName;
    this.#journalAt = deps.journalAt ?? (() => null);
  }

  /**
   * Opens the VM's RPO incident when its newest point is older than the RPO, clears it once
   * that has not been so for RPO_CLEAR_MS (at once when replication is paused or gone), and
   * arms the watch: for the instant the newest point falls out of the RPO, or the hold ends.
   * Called at start, after every commit and on pause/resume/disable.
   */
  async checkRpo(vmId: string): Promise<void> {
    const w = this.#watches.get(vmId);
    if (w) clearTimeout(w);
    this.#watches.delete(vmId);
    const target = `vm:${vmId}`;
    const row = await this.#row(vmId);
    if (!row || row.state !== 'enabled' || row.lastPointAt === null) {
      this.#brokenAt.delete(vmId);
      if (await this.#incidents.clear(RPO_VIOLATED, target))
        this.#log.info({ vm: vmId }, 'RPO incident cleared (replication paused or disabled)');
      return;
    }
    const now = this.#now();
    const lastAt = Math.max(Date.parse(row.lastPointAt), this.#journalAt(vmId) ?? 0);
    if (rpoStatus({ rpoMs: row.rpoMs, lastPointAt: lastAt }, now).violated) {
      this.#brokenAt.set(vmId, now);
      const name = await this.#vmName(vmId);
      const { incident, opened } = await this.#incidents.raise({
        kind: RPO_VIOLATED,
        target,
        severity: 'warning',
        message:
          `replication of ${name} to ${row.peer} is behind its RPO of ${row.rpoMs / 1000}s: the newest recovery point is from ${new Date(lastAt).toISOString()}` +
          (row.lastError ? ` (last error: ${row.lastError})` : ''),
        details: { vm: name, peer: row.peer, rpoSeconds: row.rpoMs / 1000, lastPointAt: row.lastPointAt },
      });
      if (opened) this.#log.warn({ vm: name, incident: incident.id }, 'RPO violated');
      return;
    }
    let holdUntil = Infinity;
    if ((await this.#incidents.openFor(RPO_VIOLATED, target)) !== null) {
      // Not seen broken by this process (a restart): the hold starts now.
      const broken = this.#brokenAt.get(vmId) ?? now;
      this.#brokenAt.set(vmId, broken);
      if (now - broken >= RPO_CLEAR_MS) {
        this.#brokenAt.delete(vmId);
        if (await this.#incidents.clear(RPO_VIOLATED, target))
          this.#log.info({ vm: vmId }, 'RPO met again; incident cleared');
      } else holdUntil = broken + RPO_CLEAR_MS;
    } else this.#brokenAt.delete(vmId);
    if (this.#stopped) return;
    const t = setTimeout(
      () => void this.checkRpo(vmId).catch((e: unknown) => this.#log.error({ vm: vmId, err: e }, 'RPO check failed')),
      Math.min(lastAt + row.rpoMs, holdUntil) - now + 50,
    );
    t.unref();
    this.#watches.set(vmId, t);
  }

  async rpoViolatedSince(vmId: string): Promise<string | null> {
    return (await this.#incidents.openFor(RPO_VIOLATED, `vm:${vmId}`))?.openedAt ?? null;
  }

  /** When each VM's open RPO incident opened, by VM id, in one query (the status of all). */
  async rpoViolatedSinceAll(): Promise<Map<string, string>> {
    const open = await this.#incidents.openOfKind(RPO_VIOLATED);
    return new Map(
      open.filter((i) => i.target.startsWith('vm:')).map((i) => [i.target.slice('vm:'.length), i.openedAt]),
    );
  }

  async cycleSucceeded(vmId: string, vmName: string): Promise<void> {
    if (await this.#incidents.clear(CYCLE_FAILED, `vm:${vmId}`))
      this.#log.info({ vm: vmName }, 'replication cycle succeeded again; incident cleared');
  }

  async cycleFailed(input: {
    vmId: string;
    vmName: string;
    peer: string;
    jobId: string;
    code: string;
    message: string;
  }): Promise<void> {
    await this.#incidents
      .raise({
        kind: CYCLE_FAILED,
        target: `vm:${input.vmId}`,
        severity: 'warning',
        message: `a replication cycle of ${input.vmName} to ${input.peer} failed: ${input.message}; the last good point is kept and the cycle is retried`,
        details: { vm: input.vmName, peer: input.peer, jobId: input.jobId, code: input.code },
      })
      .catch((err: unknown) =>
        this.#log.error({ vm: input.vmName, err }, 'could not record the failed cycle incident'),
      );
  }

  async verified(input: {
    vmId: string;
    vmName: string;
    peer: string;
    pointId: string;
    report: WriteLogReport;
  }): Promise<void> {
    const target = `vm:${input.vmId}`;
    const r = input.report;
    if (r.consistent) {
      if (await this.#incidents.clear(POINT_VERIFY_FAILED, target))
        this.#log.info(
          { vm: input.vmName, point: input.pointId },
          'a recovery point verified consistent again; incident cleared',
        );
      return;
    }
    await this.#incidents.raise({
      kind: POINT_VERIFY_FAILED,
      target,
      severity: 'critical',
      message:
        `recovery point ${input.pointId} of ${input.vmName} at ${input.peer} failed verification: ${r.gaps.length} gap(s), ${r.tornCount} torn record(s) after ` +
        `a gap-free prefix of ${r.gapFreePrefix}`,
      details: {
        vm: input.vmName,
        peer: input.peer,
        point: input.pointId,
        gaps: r.gaps.length,
        torn: r.tornCount,
        gapFreePrefix: r.gapFreePrefix,
        lastSequence: r.lastSequence,
      },
    });
  }

  /**
   * The link to a peer as the queue sees it now: opens the site's saturation incident when
   * VMs are behind, rewrites it when which VMs changes (at most every SATURATION_MIN_REWRITE_MS;
   * every 30 s while they stay the same, as lags grow), clears it
   * when none is. One incident per link, not one per VM: the cause is the link.
   */
  async linkSaturation(input: {
    peer: string;
    limit: number;
    queued: number;
    behind: readonly BehindVm[];
    bitsPerSecond: number | null;
    limitedBy: LinkLimit;
    now: number;
  }): Promise<void> {
    const target = `site:${input.peer}`;
    if (input.behind.length === 0) {
      this.#saturated.delete(input.peer);
      if (await this.#incidents.clear(LINK_SATURATED, target))
        this.#log.info({ peer: input.peer }, 'replication link keeps up again; saturation incident cleared');
      return;
    }
    const vms = input.behind.map((b) => b.vm).join(',');
    const last = this.#saturated.get(input.peer);
    if (last && last.limitedBy === input.limitedBy) {
      const since = input.now - last.at;
      if (since < (last.vms === vms ? SATURATION_REWRITE_MS : SATURATION_MIN_REWRITE_MS)) return;
    }
    this.#saturated.set(input.peer, { vms, limitedBy: input.limitedBy, at: input.now });
    const { incident, opened } = await this.#incidents.raiseOrUpdate({
      kind: LINK_SATURATED,
      target,
      severity: 'warning',
      message: saturationMessage(input),
      details: {
        peer: input.peer,
        limit: input.limit,
        queued: input.queued,
        bitsPerSecond: input.bitsPerSecond,
        limitedBy: input.limitedBy,
        behind: input.behind.map((b) => ({ ...b })),
      },
    });
    if (opened) this.#log.warn({ peer: input.peer, incident: incident.id, behind: vms }, 'replication link saturated');
  }

  /** Replication of the VM is gone: nothing of it stays open. */
  async disabled(vmId: string): Promise<void> {
    await this.checkRpo(vmId);
    await this.#incidents.clear(CYCLE_FAILED, `vm:${vmId}`);
  }

  /** At start: watches for every replication, and incidents of replications that are gone cleared. */
  async start(vmIds: string[]): Promise<void> {
    this.#stopped = false;
    for (const id of vmIds) await this.checkRpo(id);
    for (const i of await this.#incidents.list({ open: true })) {
      // The queue starts empty: a link found saturated again reopens its incident.
      if (i.kind === LINK_SATURATED) await this.#incidents.clear(i.kind, i.target);
      else if ((i.kind === RPO_VIOLATED || i.kind === CYCLE_FAILED) && !(await this.#row(i.target.slice('vm:'.length))))
        await this.#incidents.clear(i.kind, i.target);
    }
  }

  shutdown(): void {
    this.#stopped = true;
    for (const t of this.#watches.values()) clearTimeout(t);
    this.#watches.clear();
  }
}
