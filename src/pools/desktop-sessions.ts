import type { DesktopPoolRepo } from '../store/repos/desktop-pool-repo.js';
import type { PoolDesktopRepo, PoolDesktopRecord } from '../store/repos/pool-desktop-repo.js';
import type { VmService } from '../vms/vm-service.js';
import type { PowerOffListener } from '../vms/power-off-listener.js';
import type { SitePaths } from '../core/site-paths.js';
import type { Logger } from '../core/logger.js';
import { MamoriError } from '../core/mamori-error.js';
import { KeyedLock } from '../jobs/keyed-lock.js';
import { desktopFiles, writeDisposableDisk } from './desktop-clone.js';
import { isUserName, keepSpares } from './pool-spares.js';
import { desktopsNamed } from './pool-desktops.js';

/**
 * Who uses a pool's desktops, and the spares kept for the next user: assignments
 * (dedicated desktops) and the sessions a connection broker reports, each of which may
 * power spares on or off. A desktop that powers off loses its session and its disposable
 * disk's contents. PoolService runs the operations that change the desktops themselves;
 * while one runs on a pool (`operationRunning`), spares are left to it.
 */
export class DesktopSessions implements PowerOffListener {
  #pools: DesktopPoolRepo;
  #desktops: PoolDesktopRepo;
  #vms: VmService;
  #paths: SitePaths;
  #log: Logger;
  #operationRunning: (pool: string) => boolean;
  #lock = new KeyedLock();

  constructor(deps: {
    pools: DesktopPoolRepo;
    desktops: PoolDesktopRepo;
    vms: VmService;
    paths: SitePaths;
    log: Logger;
    operationRunning: (pool: string) => boolean;
  }) {
    this.#pools = deps.pools;
    this.#desktops = deps.desktops;
    this.#vms = deps.vms;
    this.#paths = deps.paths;
    this.#log = deps.log;
    this.#operationRunning = deps.operationRunning;
  }

  /**
   * A VM's QEMU has gone (VmSupervisor tells this through src/main.ts's power-off port): a
   * desktop loses its session and its disposable disk's contents, and its pool's spares are
   * made up again. Any other VM is none of this class's business.
   */
  async vmPoweredOff(vmId: string): Promise<void> {
    const row = await this.#desktops.context(vmId);
    if (!row) return;
    const spec = row.spec;
    const vm = await this.#vms.repo.findById(vmId);
    // View Composer's disposable disk: swap and temp files do not outlive a power-off.
    if (spec.disposableDiskBytes !== null && vm && ['stopped', 'crashed'].includes(vm.state)) {
      await writeDisposableDisk(
        desktopFiles(this.#paths.pool(row.storage), row.pool, vm.name, spec, row.files.length),
        spec.disposableDiskBytes,
      );
    }
    // A desktop that is off has no session (the broker may not have said so).
    if (vm && ['stopped', 'crashed'].includes(vm.state)) {
      await this.#desktops.endSessionAtPowerOff(vmId);
    }
    // A spare that went down is replaced (not awaited: the listener must not wait for a boot).
    void this.keepSpares(row.pool);
  }

  /** Assigns a desktop to a user (a dedicated desktop): it is in use, so another may start as a spare. */
  async assign(
    name: string,
    desktop: string,
    user: string,
  ): Promise<{ desktop: string; user: string; sparesStarted: string[] }> {
    const row = await this.#desktopFor(name, desktop, user);
    if (row.assignedUser !== null && row.assignedUser !== user) {
      throw new MamoriError(
        'DESKTOP_ASSIGNED',
        `desktop ${desktop} is assigned to ${row.assignedUser}: unassign it first (mamori pool unassign ${name} ${desktop})`,
        { details: { user: row.assignedUser } },
      );
    }
    if (row.sessionUser !== null && row.sessionUser !== user) {
      throw new MamoriError(
        'DESKTOP_IN_SESSION',
        `${row.sessionUser} has a session on desktop ${desktop}: end it first (mamori pool session-end ${name} ${desktop}) or pick another desktop`,
        { details: { user: row.sessionUser } },
      );
    }
    await this.#desktops.setAssignedUser(row.vmId, user, new Date().toISOString());
    return { desktop, user, sparesStarted: (await this.keepSpares(name)).started };
  }

  /** Frees a desktop of its user: without a session it is a spare again, and a spare above the target powers off. */
  async unassign(name: string, desktop: string): Promise<{ desktop: string; sparesStopped: string[] }> {
    const [d] = await desktopsNamed(this.#desktops, name, [desktop]);
    await this.#desktops.setAssignedUser(d!.vmId, null, new Date().toISOString());
    return { desktop, sparesStopped: (await this.keepSpares(name)).stopped };
  }

  /**
   * A user's session on a desktop began (a connection broker tells): the desktop is in use
   * until it ends or the desktop powers off. Only a running desktop has sessions; one
   * assigned to another user, or with another user's session, is refused.
   */
  async sessionStart(
    name: string,
    desktop: string,
    user: string,
  ): Promise<{ desktop: string; user: string; since: string; sparesStarted: string[] }> {
    const row = await this.#desktopFor(name, desktop, user);
    const vm = await this.#vms.get(desktop);
    if (vm.state !== 'running')
      throw new MamoriError(
        'VM_INVALID_STATE',
        `desktop ${desktop} is ${vm.state}: a session needs it running (mamori vm start ${desktop})`,
        { details: { state: vm.state } },
      );
    if (row.assignedUser !== null && row.assignedUser !== user) {
      throw new MamoriError('DESKTOP_ASSIGNED', `desktop ${desktop} is assigned to ${row.assignedUser}, not ${user}`, {
        details: { user: row.assignedUser },
      });
    }
    if (row.sessionUser !== null && row.sessionUser !== user) {
      throw new MamoriError(
        'DESKTOP_IN_SESSION',
        `${row.sessionUser} has a session on desktop ${desktop}: end it first (mamori pool session-end ${name} ${desktop}) or pick another desktop`,
        { details: { user: row.sessionUser } },
      );
    }
    const since = row.sessionUser === user && row.sessionSince ? row.sessionSince : new Date().toISOString();
    await this.#desktops.setSession(row.vmId, { user, since }, new Date().toISOString());
    return { desktop, user, since, sparesStarted: (await this.keepSpares(name)).started };
  }

  /** The session on a desktop ended: unless assigned, the desktop is a spare again (powered off above the target). */
  async sessionEnd(name: string, desktop: string): Promise<{ desktop: string; sparesStopped: string[] }> {
    const [d] = await desktopsNamed(this.#desktops, name, [desktop]);
    await this.#desktops.setSession(d!.vmId, null, new Date().toISOString());
    return { desktop, sparesStopped: (await this.keepSpares(name)).stopped };
  }

  /** Brings the pool's powered-on free desktops to its spare target; not while an operation changes its desktops. */
  async keepSpares(name: string): Promise<{ started: string[]; stopped: string[] }> {
    if (this.#operationRunning(name)) return { started: [], stopped: [] };
    return this.startSpares(name);
  }

  /**
   * keepSpares without the operation check: PoolService calls it as an operation ends.
   * A spare that fails to start or stop is logged and told on the pool; it never fails the operation that called it.
   */
  async startSpares(name: string): Promise<{ started: string[]; stopped: string[] }> {
    return this.#lock.run(`spares:${name}`, async () => {
      const pool = await this.#pools.find(name);
      if (!pool) return { started: [], stopped: [] };
      try {
        const done = await keepSpares(
          this.#desktops,
          { start: (vm) => this.#vms.start(vm), stop: (vm) => this.#vms.stop(vm, {}) },
          name,
          pool.spec,
        );
        if (done.started.length > 0) this.#log.info({ pool: name, started: done.started }, 'spare desktops powered on');
        if (done.stopped.length > 0)
          this.#log.info({ pool: name, stopped: done.stopped }, 'spare desktops above the target powered off');
        return done;
      } catch (e) {
        this.#log.warn({ pool: name, err: e }, 'a spare desktop did not start or stop');
        await this.#pools.setMessage(name, `a spare desktop did not start or stop: ${(e as Error).message}`);
        return { started: [], stopped: [] };
      }
    });
  }

  async #desktopFor(name: string, desktop: string, user: string): Promise<PoolDesktopRecord> {
    if (!isUserName(user))
      throw new MamoriError(
        'INVALID_INPUT',
        `user ${JSON.stringify(user)} is not a user name (alice, alice@corp.example or CORP\\alice)`,
      );
    const [d] = await desktopsNamed(this.#desktops, name, [desktop]);
    const row = await this.#desktops.find(d!.vmId);
    if (!row) throw new MamoriError('VM_NOT_FOUND', `desktop pool ${name} has no desktop ${desktop}`);
    return row;
  }
}
