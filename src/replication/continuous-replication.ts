import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { ContinuousSession } from '../cdp/continuous-session.js';
import { SharedInstant } from '../cdp/continuous-tap.js';
import { takeAppConsistentCheckpoint } from './continuous-app-checkpoints.js';
import { QemuWriteLog } from '../cdp/qemu-write-log.js';
import { JOURNAL_STREAM_PROTOCOL } from '../cdp/journal-shipping.js';
import type { Logger } from '../core/logger.js';
import type { IncidentLog } from '../events/incident-log.js';
import { JOURNAL_BROKEN } from '../events/incident-kinds.js';
import type { SitePeers } from '../sites/site-peers.js';
import { CompressedStream, type WireCompressionMode } from '../sites/compressed-stream.js';
import type { ReplicationRepo } from '../store/repos/replication-repo.js';
import type { ReplicationRecord } from '../store/records/replica-record.js';
import { replicatedDiskIds } from '../vms/vm-definition.js';
import type { VmService } from '../vms/vm-service.js';
import type { VmSupervisor } from '../vms/vm-supervisor.js';
import { queryBlockNodes } from './dirty-bitmaps.js';
import { fillJournalGap } from './journal-gap.js';

/*
 * Continuous replication on the protected site (issue 22): for each VM replicated with
 * `--continuous` that runs, a journal session (cdp/continuous-session.ts) ships every write to
 * the replica's journal at the recovery site, with a checkpoint every `checkpointMs`.
 *
 * A session begins with a cycle (a fresh point, so the gap the journal starts with is small),
 * then, under the VM's cycle lock, the taps, the gap and the first checkpoint; then the
 * recovery site starts the replica's journal over that point, and shipping begins. While a
 * session runs, the VM's scheduled cycles are skipped: the journal is its protection, and the
 * replication bitmap goes on recording under it.
 *
 * A session ends for a reason the operator chose (replication paused or disabled, the VM
 * stopped, a cycle asked for: QEMU runs one block job on a disk at a time, and the cycle's
 * fleecing is one) and then cycles take over without an incident. It breaks when something
 * fails (the tap, the journal, a cut link past the backlog bound): an incident opens, a cycle
 * resyncs from the bitmap, and a new session begins after a pause; the incident clears once it
 * streams. Sessions live in this process: after a restart, each begins again over a new point.
 */

export interface JournalStatus {
  state: 'starting' | 'streaming' | 'broken';
  /** The replica point the journal at the recovery site replays over. */
  basePointId: string | null;
  checkpointAt: string | null;
  /** The newest point in time the recovery site holds. */
  shippedAt: string | null;
  backlogBytes: number;
  /** Why the last session broke (while broken). */
  error: string | null;
  /** The protection group whose VMs share the session's checkpoints (one instant for all), or null. */
  group: string | null;
  /** The newest application-consistent checkpoint this session took (the guest frozen), or null. */
  appCheckpointAt: string | null;
  /** Why the last application-consistent checkpoint was not taken, or null. */
  appCheckpointError: string | null;
}

interface Entry {
  state: JournalStatus['state'];
  session: ContinuousSession | null;
  basePointId: string | null;
  error: string | null;
  /** When a broken VM may try again (ms since the epoch). */
  retryAt: number;
  breaks: number;
  /** A session being begun or ended: the next reconcile leaves the VM alone meanwhile. */
  busy: boolean;
  /** The protection group whose clock takes the session's checkpoints, as it was when the session began. */
  group: string | null;
  checkpointMs: number;
  /** When the session began to stream (ms since the epoch). */
  streamingSince: number;
  /** A new session begins over a new point after this long (ms). */
  rebaseMs: number;
  /** Between application-consistent checkpoints (ms); null: none. */
  appEveryMs: number | null;
  /** When the next one is due (ms since the epoch). */
  appNextAt: number;
  appTaking: boolean;
  appAt: string | null;
  appError: string | null;
}

const RECONCILE_MS = 1_000;
const RETRY_MS = [5_000, 15_000, 60_000];
/** The shortest a session streams before it rebases over a new point. */
const REBASE_MIN_MS = 60_000;
/** A tap ending this long before its VM's QEMU exits was ended by the stop. */
const VM_GONE_GRACE_MS = 3_000;
/** Journal held on the protected site for the recovery site, before the session gives up (the link is down). */
const DEFAULT_MAX_BACKLOG_BYTES = 1024 * 1024 * 1024;

export interface ContinuousReplicationDeps {
  repo: ReplicationRepo;
  vms: VmService;
  supervisor: VmSupervisor;
  peers: SitePeers;
  incidents: IncidentLog;
  log: Logger;
  compression: WireCompressionMode;
  /** Where a VM's cycles keep their files; the session's go in `cdp` beside. */
  workDir: (vmId: string) => string;
  /** Runs a cycle of the VM now (the session's base) and waits for it. */
  cycle: (vmId: string) => Promise<void>;
  /** Runs `fn` with the VM's cycles held off. */
  exclusive: <T>(vmId: string, fn: () => Promise<T>) => Promise<T>;
  /** The VM's cycles are due again (its session ended). */
  cyclesDue: (vmId: string) => void;
  /** Each grouped VM's protection group: a group's continuous VMs share checkpoints (a consistency group). */
  groups: () => Promise<Map<string, string>>;
  /** The VM's guest agent socket (application-consistent checkpoints freeze through it). */
  agentSocket: (vmId: string) => string;
  maxBacklogBytes?: number;
}

export class ContinuousReplication {
  readonly #d: ContinuousReplicationDeps;
  readonly #entries = new Map<string, Entry>();
  /** The newest point in time each VM's ended sessions left at the recovery site (its journal keeps them). */
  readonly #lastShipped = new Map<string, number>();
  /** A consistency group's clock: one checkpoint of all its streaming sessions at one instant. */
  readonly #groupClocks = new Map<string, { timer: NodeJS.Timeout; taking: boolean }>();
  #timer: NodeJS.Timeout | null = null;
  #reconciling = false;
  #stopped = false;

  constructor(deps: ContinuousReplicationDeps) {
    this.#d = deps;
  }

  /**
   * At server start, before any cycle: the taps a killed server left in its running VMs go (a
   * cycle's fleecing is refused beside one); then the sessions begin again, each over a new point.
   */
  async start(): Promise<void> {
    for (const row of await this.#d.repo.list()) {
      const qmp = this.#d.supervisor.qmpOf(row.vmId);
      const vm = qmp === null ? undefined : await this.#d.vms.repo.findById(row.vmId);
      if (qmp === null || !vm) continue;
      for (const [i] of replicatedDiskIds(vm.definition).entries()) {
        const found = await QemuWriteLog.clearLeftovers(qmp, `disk${i}`).catch((e: unknown) => {
          this.#d.log.warn({ vm: vm.name, err: (e as Error).message }, "could not clear a journal tap's leftovers");
          return false;
        });
        if (found) this.#d.log.info({ vm: vm.name, disk: i }, 'cleared the journal tap a killed server left');
      }
    }
    this.#timer = setInterval(() => void this.#reconcile(), RECONCILE_MS);
    this.#timer.unref();
  }

  async shutdown(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    for (const vmId of [...this.#entries.keys()]) await this.end(vmId);
    for (const c of this.#groupClocks.values()) clearInterval(c.timer);
    this.#groupClocks.clear();
  }

  /** A session begins or runs: the VM's scheduled cycles wait. */
  active(vmId: string): boolean {
    const e = this.#entries.get(vmId);
    return e !== undefined && e.state !== 'broken';
  }

  status(vmId: string): JournalStatus | null {
    const e = this.#entries.get(vmId);
    if (e === undefined) return null;
    const s = e.session?.status;
    return {
      state: e.state,
      basePointId: e.basePointId,
      checkpointAt: s?.checkpointAt ?? null,
      shippedAt: s?.shippedAt ?? null,
      backlogBytes: s?.backlogBytes ?? 0,
      error: e.error,
      group: e.group,
      appCheckpointAt: e.appAt,
      appCheckpointError: e.appError,
    };
  }

  /** The newest point in time the recovery site holds (ms since the epoch), or null. */
  shippedAtMs(vmId: string): number | null {
    return this.#entries.get(vmId)?.session?.shippedAtMs ?? this.#lastShipped.get(vmId) ?? null;
  }

  /** Continuous replication of the VM is gone (disabled): what its sessions left is no longer its RPO. */
  async forget(vmId: string): Promise<void> {
    await this.end(vmId);
    this.#lastShipped.delete(vmId);
  }

  #keepShipped(vmId: string, session: ContinuousSession): void {
    const at = session.shippedAtMs;
    if (at !== null) this.#lastShipped.set(vmId, Math.max(at, this.#lastShipped.get(vmId) ?? 0));
  }

  /** Ends the VM's session, if any, for a reason of the operator's (no incident); cycles take over. */
  async end(vmId: string): Promise<void> {
    const e = this.#entries.get(vmId);
    if (e === undefined) return;
    this.#entries.delete(vmId);
    const session = e.session;
    e.session = null;
    if (session !== null) {
      this.#keepShipped(vmId, session);
      await session.stop();
      this.#d.log.info({ vm: vmId }, 'continuous replication session ended; cycles protect the VM');
    }
    if (!this.#stopped) this.#d.cyclesDue(vmId);
  }

  async #reconcile(): Promise<void> {
    if (this.#reconciling || this.#stopped) return;
    this.#reconciling = true;
    try {
      const rows = await this.#d.repo.list();
      const byVm = new Map(rows.map((r) => [r.vmId, r]));
      const groups = await this.#d.groups();
      for (const [vmId, e] of this.#entries) {
        const row = byVm.get(vmId);
        // A VM that joined or left a group since its session began: a new session, on the right clock.
        const regrouped = e.state === 'streaming' && (groups.get(vmId) ?? null) !== e.group;
        // The journal's window is kept by epochs (cdp/recovery-journals.ts): a session past a
        // quarter of it ends, and the next begins over a new point, so the oldest epoch can
        // leave the window whole, and the local journal (the session's) never outgrows it.
        const rebase = e.state === 'streaming' && Date.now() - e.streamingSince > e.rebaseMs;
        if (!e.busy && (row === undefined || !this.#wanted(row) || regrouped || rebase)) {
          // A broken VM's incident goes when continuous replication ends for it.
          if (e.state === 'broken') await this.#d.incidents.clear(JOURNAL_BROKEN, `vm:${vmId}`).catch(() => false);
          await this.end(vmId);
        }
      }
      for (const row of rows) {
        if (!this.#wanted(row)) continue;
        const e = this.#entries.get(row.vmId);
        if (e === undefined || (e.state === 'broken' && !e.busy && Date.now() >= e.retryAt))
          void this.#begin(row, e?.breaks ?? 0);
      }
      this.#appCheckpointsDue();
    } catch (e) {
      this.#d.log.warn({ err: (e as Error).message }, 'continuous replication could not look at its VMs');
    } finally {
      this.#reconciling = false;
    }
  }

  #wanted(row: ReplicationRecord): boolean {
    return row.continuous !== null && row.state === 'enabled' && this.#d.supervisor.qmpOf(row.vmId) !== null;
  }

  async #begin(row: ReplicationRecord, breaks: number): Promise<void> {
    const { vmId } = row;
    const entry: Entry = {
      state: 'starting',
      session: null,
      basePointId: null,
      error: null,
      retryAt: 0,
      breaks,
      busy: true,
      group: null,
      checkpointMs: row.continuous!.checkpointMs,
      streamingSince: 0,
      rebaseMs: Math.max(REBASE_MIN_MS, row.continuous!.journalMs / 4),
      appEveryMs: row.continuous!.appCheckpointMs ?? null,
      appNextAt: Date.now() + (row.continuous!.appCheckpointMs ?? 0),
      appTaking: false,
      appAt: null,
      appError: null,
    };
    // Set before any await: the next reconcile must find it, however slow what follows.
    this.#entries.set(vmId, entry);
    try {
      entry.group = (await this.#d.groups()).get(vmId) ?? null;
      await this.#d.cycle(vmId);
      const settings = row.continuous!;
      const session = await this.#d.exclusive(vmId, async () => {
        const now = await this.#d.repo.find(vmId);
        const qmp = this.#d.supervisor.qmpOf(vmId);
        const vm = await this.#d.vms.repo.findById(vmId);
        if (now === undefined || now.lastPointId === null || now.generation === null || qmp === null || !vm)
          throw new Error('the VM stopped, or has no point to start a journal over');
        const nodes = replicatedDiskIds(vm.definition).map((_, i) => `disk${i}`);
        const info = await queryBlockNodes(qmp);
        entry.basePointId = now.lastPointId;
        const generation = now.generation;
        const dir = join(this.#d.workDir(vmId), 'cdp');
        return ContinuousSession.start({
          qmp,
          disks: nodes.map((node) => ({ node, sizeBytes: info.get(node)?.virtualSize ?? 0 })),
          dir,
          checkpointMs: settings.checkpointMs,
          sharedClock: entry.group !== null,
          fillGap: async (disk, journal) => {
            const { bytes } = await fillJournalGap({
              qmp,
              node: nodes[disk]!,
              generation,
              journal,
              nbdSocket: join(this.#d.workDir(vmId), 'gap.sock'),
            });
            this.#d.log.info({ vm: vmId, disk, bytes }, 'journal gap filled from the bitmap');
          },
          maxBacklogBytes: this.#d.maxBacklogBytes ?? DEFAULT_MAX_BACKLOG_BYTES,
          onBroken: (reason) => void this.#broke(vmId, entry, reason),
          log: this.#d.log,
        });
      });
      entry.session = session;
      if (this.#entries.get(vmId) !== entry || this.#stopped) {
        await session.stop();
        return;
      }
      const peer = await this.#d.peers.client(row.peer, { timeoutMs: 60_000 });
      await peer.request('POST', `/replicas/${row.replicaId}/journal`, {
        basePointId: entry.basePointId,
        windowSeconds: Math.round(settings.journalMs / 1000),
      });
      const base = encodeURIComponent(entry.basePointId!);
      session.ship(async (disk): Promise<Duplex> => {
        const p = await this.#d.peers.client(row.peer, { timeoutMs: 20_000 });
        const socket = await p.openStream(
          `/replicas/${row.replicaId}/journal/disks/${disk}/stream?base=${base}`,
          JOURNAL_STREAM_PROTOCOL,
          { timeoutMs: 20_000 },
        );
        return new CompressedStream(socket, { mode: this.#d.compression });
      });
      if (entry.state === 'starting') {
        entry.state = 'streaming';
        entry.streamingSince = Date.now();
        entry.breaks = 0;
        if (entry.group !== null) this.#startGroupClock(entry.group);
        await this.#d.incidents.clear(JOURNAL_BROKEN, `vm:${vmId}`).catch(() => false);
        this.#d.log.info({ vm: vmId, basePoint: entry.basePointId }, 'continuous replication streams');
      }
    } catch (e) {
      if (this.#entries.get(vmId) === entry) await this.#broke(vmId, entry, (e as Error).message);
    } finally {
      entry.busy = false;
    }
  }

  /**
   * A consistency group's checkpoints: every interval (its members' shortest), one instant for
   * the disks of all its streaming sessions (cdp/continuous-tap.ts SharedInstant): the drained
   * checkpoints are taken at once and every journal is stamped with the earliest. The clock stops
   * when no member streams.
   */
  #startGroupClock(group: string): void {
    const members = (): Entry[] =>
      [...this.#entries.values()].filter((e) => e.group === group && e.state === 'streaming' && e.session !== null);
    const ms = Math.min(...members().map((e) => e.checkpointMs));
    const running = this.#groupClocks.get(group);
    if (running !== undefined) return;
    const clock = {
      taking: false,
      timer: setInterval(() => {
        const now = members();
        if (now.length === 0) {
          clearInterval(clock.timer);
          this.#groupClocks.delete(group);
          return;
        }
        if (clock.taking) return;
        const ready = now.filter((e) => e.session!.disksReady > 0);
        if (ready.length === 0) return;
        const instant = new SharedInstant(ready.reduce((n, e) => n + e.session!.disksReady, 0));
        clock.taking = true;
        void Promise.allSettled(ready.map((e) => e.session!.checkpointShared(instant))).finally(
          () => (clock.taking = false),
        );
      }, ms),
    };
    this.#groupClocks.set(group, clock);
  }

  /**
   * Application-consistent checkpoints that are due: a VM alone, or its consistency group's
   * streaming members together (frozen together, one shared instant; the group's clock holds
   * off meanwhile). Each runs in the background; the next is due an interval after it ends.
   */
  #appCheckpointsDue(): void {
    const now = Date.now();
    const streaming = [...this.#entries].filter(
      ([, e]) => e.state === 'streaming' && e.session !== null && !e.busy && e.appEveryMs !== null,
    );
    const started = new Set<string>();
    for (const [vmId, e] of streaming) {
      if (e.appTaking || now < e.appNextAt || started.has(vmId)) continue;
      const members = e.group === null ? [[vmId, e] as const] : streaming.filter(([, m]) => m.group === e.group);
      if (members.some(([, m]) => m.appTaking)) continue;
      for (const [id] of members) started.add(id);
      void this.#appCheckpoint(members, e.group);
    }
  }

  async #appCheckpoint(members: readonly (readonly [string, Entry])[], group: string | null): Promise<void> {
    const clock = group === null ? undefined : this.#groupClocks.get(group);
    if (clock !== undefined) clock.taking = true;
    for (const [, e] of members) e.appTaking = true;
    try {
      const named = await Promise.all(
        members.map(async ([vmId, e]) => ({
          vmName: (await this.#d.vms.repo.nameAndState(vmId))?.name ?? vmId,
          session: e.session!,
          agentSocket: this.#d.agentSocket(vmId),
        })),
      );
      const outcome = await takeAppConsistentCheckpoint(named, group !== null);
      for (const [, e] of members) {
        e.appError = outcome.error;
        if (outcome.at !== null) e.appAt = outcome.at;
      }
      if (outcome.error !== null)
        this.#d.log.warn(
          { vms: named.map((n) => n.vmName), err: outcome.error },
          'no application-consistent checkpoint',
        );
    } catch (err) {
      for (const [, e] of members) e.appError = (err as Error).message;
    } finally {
      if (clock !== undefined) clock.taking = false;
      for (const [, e] of members) {
        e.appTaking = false;
        e.appNextAt = Date.now() + (e.appEveryMs ?? 0);
      }
    }
  }

  /** Whether the VM's QEMU is gone, or goes within a few seconds. */
  async #vmGone(vmId: string): Promise<boolean> {
    const until = Date.now() + VM_GONE_GRACE_MS;
    for (;;) {
      if (this.#d.supervisor.qmpOf(vmId) === null) return true;
      if (Date.now() >= until) return false;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async #broke(vmId: string, entry: Entry, reason: string): Promise<void> {
    if (this.#entries.get(vmId) !== entry || entry.state === 'broken') return;
    entry.state = 'broken';
    entry.error = reason;
    // Left alone by the reconcile until decided: a stop or a break, and when to try again.
    const wasBusy = entry.busy;
    entry.busy = true;
    try {
      const session = entry.session;
      entry.session = null;
      if (session !== null) this.#keepShipped(vmId, session);
      await session?.stop();
      // A VM that stops takes its tap with it (QEMU cancels the mirror as it quits, a moment
      // before the process is gone): an end, not a break.
      if ((await this.#vmGone(vmId)) || (await this.#d.repo.find(vmId))?.state !== 'enabled') {
        if (this.#entries.get(vmId) === entry) this.#entries.delete(vmId);
        this.#d.cyclesDue(vmId);
        return;
      }
      entry.breaks += 1;
      entry.retryAt = Date.now() + RETRY_MS[Math.min(entry.breaks, RETRY_MS.length) - 1]!;
      this.#d.log.warn(
        { vm: vmId, err: reason, retryInMs: entry.retryAt - Date.now() },
        'continuous replication broke; cycles protect the VM until it starts again',
      );
      const vm = await this.#d.vms.repo.findById(vmId);
      await this.#d.incidents
        .raise({
          kind: JOURNAL_BROKEN,
          target: `vm:${vmId}`,
          severity: 'warning',
          message: `the continuous journal of ${vm?.name ?? vmId} broke (${reason}); cycles protect it until a new journal streams`,
          details: { vm: vm?.name ?? vmId, reason },
        })
        .catch(() => undefined);
      this.#d.cyclesDue(vmId);
    } finally {
      entry.busy = wasBusy;
    }
  }
}
