import { copyFile, mkdir, rename, rm, stat } from 'node:fs/promises';
import type { Logger } from '../core/logger.js';
import type { IncidentLog } from '../events/incident-log.js';
import { VM_IO_PAUSED } from '../events/incident-kinds.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import type { SitePaths } from '../core/site-paths.js';
import { QmpClient } from '../qemu/qmp-client.js';
import { buildVmArgv } from '../qemu/vm-argv.js';
import { tapName } from '../qemu/tap-name.js';
import { argvDisk, argvMachine } from './vm-argv-mapping.js';
import type { DiskRepo } from '../store/repos/disk-repo.js';
import type { VmRepo, VmRow } from '../store/repos/vm-repo.js';
import type { HostRuntime } from '../host/host-runtime.js';
import { isQemuOfVm, launchDaemonizedQemu, readPidFile, waitForExit } from './qemu-process.js';
import { IoErrorResume, type BlockIoError } from './io-error-resume.js';
import { SerialWatcher } from './serial-watcher.js';
import { attachTap } from '../networks/site-networks.js';
import type { PowerOffListener } from './power-off-listener.js';

interface LiveVm {
  vmId: string;
  pid: number;
  qmp: QmpClient;
  watcher: SerialWatcher;
  /** We asked QEMU to go (stop, kill, quit): its exit is not a crash. */
  expectExit: boolean;
  /** The guest powered itself off (SHUTDOWN event): its exit is not a crash either. */
  sawShutdown: boolean;
  exited: Promise<void>;
  /** Resumes the VM after a host I/O error paused it (io-error-resume.ts). */
  ioErrors: IoErrorResume;
}

export interface Heartbeat {
  at: string;
  line: string;
}

const QMP_CONNECT_MS = 15_000;

/**
 * Owns the QEMU processes of this site: starts them detached, keeps a QMP connection to
 * each, turns QMP events and process exits into VM states, and re-attaches to VMs that
 * kept running while the server was down.
 */
export class VmSupervisor {
  #live = new Map<string, LiveVm>();
  #heartbeats = new Map<string, Heartbeat>();
  #vms: VmRepo;
  #disks: DiskRepo;
  #paths: SitePaths;
  #host: HostRuntime;
  #log: Logger;
  #incidents: IncidentLog;
  #bridgeOf: (network: string) => Promise<string | null>;

  constructor(deps: {
    vms: VmRepo;
    disks: DiskRepo;
    paths: SitePaths;
    host: HostRuntime;
    log: Logger;
    /** Where a VM held paused on an I/O error is raised (vm.io-paused). */
    incidents: IncidentLog;
    bridgeOf?: (network: string) => Promise<string | null>;
    /** Told each time a VM's QEMU has gone (see PowerOffListener). */
    powerOff: PowerOffListener;
  }) {
    this.#bridgeOf = deps.bridgeOf ?? (async () => null);
    this.#vms = deps.vms;
    this.#disks = deps.disks;
    this.#paths = deps.paths;
    this.#host = deps.host;
    this.#log = deps.log;
    this.#incidents = deps.incidents;
    this.#powerOff = deps.powerOff;
  }

  #powerOff: PowerOffListener;

  async #poweredOff(vmId: string): Promise<void> {
    // A VM held paused on an I/O error and then stopped is held no more.
    await this.#incidents.clear(VM_IO_PAUSED, `vm:${vmId}`).catch(() => undefined);
    await this.#powerOff
      .vmPoweredOff(vmId)
      .catch((e: unknown) => this.#log.warn({ vmId, err: e }, 'a power-off listener failed'));
  }

  lastHeartbeat(vmId: string): Heartbeat | null {
    return this.#heartbeats.get(vmId) ?? null;
  }

  qmpOf(vmId: string): QmpClient | null {
    return this.#live.get(vmId)?.qmp ?? null;
  }

  /**
   * incoming: the destination of a live migration. QEMU starts with `-incoming defer` and
   * stays paused (state 'incoming') until the migration completes and activateIncoming()
   * runs the guest; its taps join their bridges now, as for any start.
   */
  async start(vm: VmRow, opts: { incoming?: boolean } = {}): Promise<void> {
    const def = vm.definition;
    const rt = this.#paths.vmRuntime(vm.id);
    await mkdir(this.#paths.vmDir(vm.id), { recursive: true });
    await rm(rt.qmpSocket, { force: true });
    await rm(rt.pidFile, { force: true });
    // Keep the previous boot's console for post-mortems; this boot starts a fresh log.
    await rename(rt.serialLog, `${rt.serialLog}.prev`).catch(() => undefined);
    const disks = await this.#disksInOrder(vm);
    const ovmf = def.firmware === 'uefi' ? await this.#host.ovmf() : null;
    // The variable store is the VM's own NVRAM (boot entries): made once, kept across boots.
    if (
      ovmf &&
      !(await stat(rt.uefiVars).then(
        () => true,
        () => false,
      ))
    )
      await copyFile(ovmf.vars, rt.uefiVars);
    const testGuest = def.boot.kind === 'test-guest' ? await this.#host.testGuest(def.firmware) : null;
    const accel = await this.#host.accel();
    const argv = [
      ...buildVmArgv({
        def: argvMachine(def),
        disks: disks.map(argvDisk),
        paths: rt,
        accel,
        testGuest,
        ovmfCode: ovmf?.code ?? null,
      }),
      ...(opts.incoming ? ['-incoming', 'defer'] : []),
    ];

    // A heartbeat of the previous boot (or of an earlier VM with this id) says nothing about this one.
    this.#heartbeats.delete(vm.id);
    await this.#vms.setState(vm.id, 'starting', { reason: null });
    let pid: number | null = null;
    try {
      pid = await launchDaemonizedQemu(argv, rt.pidFile);
      const live = await this.#attach(vm.id, pid, 0);
      // Taps join their bridges while the guest is still paused: it never sees a link without a network.
      for (const [i, nic] of def.nics.entries()) {
        const bridge = await this.#bridgeOf(nic.network);
        if (bridge !== null) await attachTap(tapName(vm.id, i), bridge);
      }
      if (opts.incoming) {
        await this.#vms.setState(vm.id, 'incoming', { pid });
        this.#log.info({ vm: vm.name, pid, accel }, 'vm started, waiting for an incoming migration');
        return;
      }
      await live.qmp.execute('cont', undefined, { timeoutMs: 10_000 });
      await this.#vms.setState(vm.id, 'running', { pid });
      this.#log.info({ vm: vm.name, pid, accel }, 'vm started');
    } catch (e) {
      const live = this.#live.get(vm.id);
      if (live) live.expectExit = true;
      if (pid !== null && (await isQemuOfVm(pid, vm.id))) process.kill(pid, 'SIGKILL');
      if (live) await live.exited;
      await this.#vms.setState(vm.id, 'stopped', { reason: `start failed: ${(e as Error).message}`, pid: null });
      throw e;
    }
  }

  /**
   * ACPI power button, then (after timeoutSec) a forced power-off. A paused guest cannot
   * see the button, so it is resumed first.
   */
  async stop(vm: VmRow, opts: { timeoutSec: number; force: boolean }): Promise<{ forced: boolean }> {
    const live = this.#requireLive(vm);
    await this.#vms.setState(vm.id, 'stopping');
    if (!opts.force) {
      try {
        const status = await live.qmp.execute('query-status', undefined, { timeoutMs: 5_000 });
        if (!status.running) await live.qmp.execute('cont', undefined, { timeoutMs: 5_000 });
        await live.qmp.execute('system_powerdown', undefined, { timeoutMs: 5_000 });
      } catch (e) {
        // The button was never pressed: the VM runs on as before.
        if (this.#live.get(vm.id) === live) await this.#vms.setState(vm.id, vm.state);
        throw e;
      }
      if (await this.#waitExited(live, opts.timeoutSec * 1000)) return { forced: false };
      this.#log.warn({ vm: vm.name, timeoutSec: opts.timeoutSec }, 'guest ignored the power button; forcing off');
    }
    live.expectExit = true;
    try {
      await live.qmp.execute('quit', undefined, { timeoutMs: 5_000 });
    } catch (e) {
      // quit closes the socket, which can race the reply; the exit below is what counts.
      if (!isMamoriError(e, 'QMP_DISCONNECTED') && !isMamoriError(e, 'QMP_TIMEOUT')) throw e;
    }
    if (!(await this.#waitExited(live, 10_000))) process.kill(live.pid, 'SIGKILL');
    await live.exited;
    return { forced: true };
  }

  async kill(vm: VmRow): Promise<void> {
    const live = this.#requireLive(vm);
    live.expectExit = true;
    process.kill(live.pid, 'SIGKILL');
    await live.exited;
  }

  async pause(vm: VmRow): Promise<void> {
    const live = this.#requireLive(vm);
    await live.qmp.execute('stop', undefined, { timeoutMs: 10_000 });
    await this.#vms.setState(vm.id, 'paused');
  }

  /** The migration into this VM completed: run the guest here. */
  async activateIncoming(vm: VmRow): Promise<void> {
    const live = this.#requireLive(vm);
    await live.qmp.execute('cont', undefined, { timeoutMs: 10_000 });
    await this.#vms.setState(vm.id, 'running');
  }

  async resume(vm: VmRow): Promise<void> {
    const live = this.#requireLive(vm);
    await live.qmp.execute('cont', undefined, { timeoutMs: 10_000 });
    await this.#vms.setState(vm.id, 'running');
  }

  /**
   * At server start: find every VM the database says is up. A live QEMU with our UUID is
   * re-attached through its QMP socket; a dead one is marked crashed.
   */
  async reattachAll(): Promise<void> {
    for (const vm of await this.#vms.list()) {
      if (!['starting', 'running', 'paused', 'stopping', 'incoming'].includes(vm.state)) continue;
      const pid = vm.pid ?? (await readPidFile(this.#paths.vmRuntime(vm.id).pidFile));
      if (pid === null || !(await isQemuOfVm(pid, vm.id))) {
        await this.#vms.setState(vm.id, 'crashed', {
          reason: 'QEMU exited while the site server was not running',
          pid: null,
        });
        this.#log.warn({ vm: vm.name }, 'vm found dead at server start; marked crashed');
        await this.#poweredOff(vm.id);
        continue;
      }
      try {
        const serialSize = await stat(this.#paths.vmRuntime(vm.id).serialLog).then(
          (s) => s.size,
          () => 0,
        );
        const live = await this.#attach(vm.id, pid, serialSize);
        const status = await live.qmp.execute('query-status', undefined, { timeoutMs: 5_000 });
        await this.#vms.setState(vm.id, status.running ? 'running' : 'paused', { pid });
        this.#log.info({ vm: vm.name, pid, status: status.status }, 'vm re-attached');
        // Paused on a host I/O error while no server watched: its retries start now.
        if (status.status === 'io-error')
          live.ioErrors.onError({
            device: '',
            operation: 'write',
            action: 'stop',
            reason: 'paused on a host I/O error before this server started',
          });
      } catch (e) {
        this.#log.error(
          { vm: vm.name, pid, err: e },
          'could not re-attach to a running QEMU; it keeps running, state unknown',
        );
        await this.#vms.setState(vm.id, vm.state, { reason: `re-attach failed: ${(e as Error).message}` });
      }
    }
  }

  /** Server shutdown: drop our connections, leave every VM running. */
  async detachAll(): Promise<void> {
    const all = [...this.#live.values()];
    // Out of the map first: the close events that follow are ours, not QEMU exits.
    this.#live.clear();
    for (const live of all) {
      live.watcher.stop();
      await live.qmp.close();
    }
  }

  async #attach(vmId: string, pid: number, serialOffset: number): Promise<LiveVm> {
    const rt = this.#paths.vmRuntime(vmId);
    const qmp = await QmpClient.connect(rt.qmpSocket, { connectTimeoutMs: QMP_CONNECT_MS });
    let resolveExited!: () => void;
    const exited = new Promise<void>((r) => (resolveExited = r));
    const watcher = new SerialWatcher(rt.serialLog, serialOffset, ({ line, at }) => {
      if (line.startsWith('mamori-hb ')) {
        const hb = { at: at.toISOString(), line };
        this.#heartbeats.set(vmId, hb);
        void this.#vms.setHeartbeat(vmId, hb.at).catch(() => undefined);
      }
    });
    watcher.start();
    // A host I/O error pauses the VM (werror/rerror=stop) and is retried: always in the log,
    // with the node and operation QEMU names; the guest sees EIO only for a physical RDM.
    const ioErrors = new IoErrorResume({
      runState: async () => (await qmp.execute('query-status', undefined, { timeoutMs: 5_000 })).status,
      resume: async () => void (await qmp.execute('cont', undefined, { timeoutMs: 10_000 })),
      giveUp: (e) => this.#heldOnIoError(vmId, e),
      log: this.#log.child({ vmId }),
    });
    const live: LiveVm = { vmId, pid, qmp, watcher, expectExit: false, sawShutdown: false, exited, ioErrors };
    this.#live.set(vmId, live);
    qmp.on('SHUTDOWN', () => {
      live.sawShutdown = true;
      void this.#vms.setState(vmId, 'stopping');
    });
    qmp.on('STOP', () => {
      if (!live.sawShutdown && !live.expectExit) void this.#vms.setState(vmId, 'paused');
    });
    qmp.on('RESUME', () => {
      void this.#vms.setState(vmId, 'running', { reason: null });
      void this.#incidents.clear(VM_IO_PAUSED, `vm:${vmId}`).catch(() => undefined);
    });
    qmp.on('BLOCK_IO_ERROR', (e) => {
      this.#log.warn({ vmId, event: e.data }, 'QEMU met a host I/O error');
      ioErrors.onError(e.data);
    });
    qmp.on('close', () => {
      ioErrors.stop();
      void this.#onQmpClosed(live).finally(resolveExited);
    });
    return live;
  }

  /** The retries ran out: the VM waits paused, saying why, with an incident for the person on call. */
  async #heldOnIoError(vmId: string, e: BlockIoError): Promise<void> {
    const reason = `paused on a host I/O error (${e.operation} of ${e['node-name'] ?? e.device}: ${e.reason}); resume it once its storage is fixed`;
    await this.#vms.setState(vmId, 'paused', { reason });
    const vm = (await this.#vms.findById(vmId))?.name ?? vmId;
    await this.#incidents.raise({
      kind: VM_IO_PAUSED,
      target: `vm:${vmId}`,
      severity: 'critical',
      message: `${vm} is ${reason}`,
      details: { vm, node: e['node-name'] ?? e.device, operation: e.operation, error: e.reason },
    });
  }

  async #onQmpClosed(live: LiveVm): Promise<void> {
    if (this.#live.get(live.vmId) !== live) return; // detached on purpose
    const gone = await waitForExit(live.pid, live.vmId, 5_000);
    if (!gone) {
      // QEMU lives but dropped the monitor connection: connect again rather than lose it.
      try {
        this.#live.delete(live.vmId);
        live.watcher.stop();
        const again = await this.#attach(live.vmId, live.pid, 0);
        again.expectExit = live.expectExit;
        return;
      } catch (e) {
        this.#log.error({ vmId: live.vmId, err: e }, 'QMP connection lost and could not be re-established');
        return;
      }
    }
    await live.watcher.poll();
    live.watcher.stop();
    this.#live.delete(live.vmId);
    const clean = live.expectExit || live.sawShutdown;
    await this.#vms.setState(live.vmId, clean ? 'stopped' : 'crashed', {
      pid: null,
      reason: clean
        ? live.sawShutdown && !live.expectExit
          ? 'guest powered off'
          : null
        : 'QEMU exited unexpectedly (killed or crashed)',
    });
    this.#log[clean ? 'info' : 'warn']({ vmId: live.vmId, pid: live.pid }, clean ? 'vm stopped' : 'vm crashed');
    await this.#poweredOff(live.vmId);
  }

  async #waitExited(live: LiveVm, ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
    const done = await Promise.race([live.exited.then(() => true as const), timeout]);
    clearTimeout(timer);
    return done;
  }

  #requireLive(vm: VmRow): LiveVm {
    const live = this.#live.get(vm.id);
    if (!live)
      throw new MamoriError(
        'VM_INVALID_STATE',
        `VM ${vm.name} is ${vm.state}, not running; start it with 'mamori vm start ${vm.name}'`,
        { details: { state: vm.state } },
      );
    return live;
  }

  async #disksInOrder(vm: VmRow) {
    const all = await this.#disks.byIds(vm.definition.diskIds);
    return vm.definition.diskIds.map((id) => {
      const d = all.find((x) => x.id === id);
      if (!d) throw new MamoriError('DISK_NOT_FOUND', `VM ${vm.name} refers to disk ${id}, which no longer exists`);
      return d;
    });
  }
}
