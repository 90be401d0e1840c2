import type { IncomingTarget } from './migration-target.js';
import { join } from 'node:path';
import type { StoreHandle } from '../store/store-handle.js';
import { IncomingMigrationRepo } from '../store/repos/incoming-migration-repo.js';
import { ReplicaRepo } from '../store/repos/replica-repo.js';
import type { VmService } from '../vms/vm-service.js';
import type { VmSupervisor } from '../vms/vm-supervisor.js';
import type { DiskService } from '../disks/disk-service.js';
import type { DiskRecord } from '../disks/disk-record.js';
import { replicatedDiskIds, type VmDefinition } from '../vms/vm-definition.js';
import { bitmapName, ensureBitmap } from '../replication/dirty-bitmaps.js';
import type { ReplicaService } from '../replication/replica-service.js';
import type { SitePaths } from '../core/site-paths.js';
import type { SiteTls } from '../sites/site-tls.js';
import { writeQemuTlsCreds } from '../sites/qemu-tls-creds.js';
import { MamoriError } from '../core/mamori-error.js';
import { freePort } from '../core/free-port.js';
import type { Logger } from '../core/logger.js';
import type { MigrationSource } from './migration-source.js';

const TLS_ID = 'mig-tls';

/**
 * The destination of a live migration: the VM as it is at the source (same UUID, name and
 * MACs), with empty disks of the same sizes, in a QEMU started with `-incoming defer` that
 * serves those disks over NBD with TLS (only the paired source's certificate gets in) and
 * listens for the migration stream (TLS too). Nothing runs here until activate(); abort()
 * removes all of it, files and rows, so a cancelled or failed migration leaves nothing.
 */
export class IncomingMigrations {
  #repo: IncomingMigrationRepo;
  #replicaRepo: ReplicaRepo;
  #vms: VmService;
  #supervisor: VmSupervisor;
  #disks: DiskService;
  #paths: SitePaths;
  #tls: SiteTls;
  #listenHost: () => string;
  #log: Logger;
  #replicas: ReplicaService;
  /** vmId → when the source last said it still drives the migration, and how long it may be silent. */
  #leases = new Map<string, { renewedAt: number; leaseMs: number }>();
  #leaseTimer: NodeJS.Timeout | null = null;
  /** Asked whether a migration that reached here whole switched over (only the source can tell). */
  #source: MigrationSource;

  constructor(deps: {
    db: StoreHandle;
    vms: VmService;
    supervisor: VmSupervisor;
    disks: DiskService;
    paths: SitePaths;
    tls: SiteTls;
    listenHost: () => string;
    log: Logger;
    replicas: ReplicaService;
    source: MigrationSource;
  }) {
    this.#source = deps.source;
    this.#replicas = deps.replicas;
    this.#repo = new IncomingMigrationRepo(deps.db);
    this.#replicaRepo = new ReplicaRepo(deps.db);
    this.#vms = deps.vms;
    this.#supervisor = deps.supervisor;
    this.#disks = deps.disks;
    this.#paths = deps.paths;
    this.#tls = deps.tls;
    this.#listenHost = deps.listenHost;
    this.#log = deps.log;
  }

  /**
   * replicaPointId (replica-aware): this site holds a replica of the VM whose newest point is
   * that one; each disk starts as an overlay on it instead of empty, so the source sends only
   * what changed since. The replica is held (retention keeps the point) and, once the VM runs
   * here, promoted: its chain is the VM's disks now.
   */
  async prepare(
    peer: { name: string; caPem: string },
    input: {
      definition: Omit<VmDefinition, 'diskIds'>;
      disks: { sizeBytes: number }[];
      replicaPointId?: string;
      leaseSec?: number;
    },
  ): Promise<IncomingTarget> {
    const def = input.definition;
    const same = await this.#vms.repo.findById(def.id);
    if (same) {
      // Hyper-V's "same ID already exists": here only when this site kept an older copy of the VM
      // off after a failover without reprotect. Its disks may hold writes someone wants, so it
      // is not removed behind the operator's back.
      const superseded = await this.#vms.repo.findSuperseded(def.id);
      throw new MamoriError(
        'VM_EXISTS',
        superseded
          ? `this site keeps an older copy of ${def.name} (${same.name}), off since it was failed over to ${superseded.bySite} at ${superseded.at}; ` +
              `delete it here ('mamori vm delete ${same.name}') or reprotect so it seeds a replica, then migrate`
          : `a VM with id ${def.id} (${same.name}) already exists at this site`,
        { details: { vm: def.name } },
      );
    }
    if (await this.#vms.repo.findByName(def.name))
      throw new MamoriError('VM_EXISTS', `a VM named ${def.name} already exists at this site`, {
        details: { vm: def.name },
      });
    for (const n of def.nics) {
      if (n.network === 'user' || n.network === 'none') continue;
      if (!(await this.#repo.networkExists(n.network))) {
        throw new MamoriError(
          'NETWORK_NOT_FOUND',
          `${def.name} has a NIC on network ${n.network}, which this site does not have; create it first`,
          { details: { network: n.network } },
        );
      }
    }
    const made: DiskRecord[] = [];
    const now = new Date().toISOString();
    // Written first: whatever follows, a restart finds the half-made copy and removes it.
    await this.#repo.begin(def.id, peer.name, now);
    try {
      let replicaId: string | null = null;
      if (input.replicaPointId === undefined) {
        for (const [i, d] of input.disks.entries()) {
          made.push(
            await this.#disks.prepareImage({
              name: `${def.name}-mig${i}-${def.id.slice(0, 8)}`,
              sizeBytes: d.sizeBytes,
              vmId: def.id,
              ownedByVm: true,
            }),
          );
        }
      } else {
        const r = await this.#replicaRepo.findIdBySource(peer.name, def.id);
        if (r === undefined)
          throw new MamoriError('NOT_FOUND', `this site holds no replica of ${def.name}; migrate without one`);
        replicaId = r;
        const { point, files } = await this.#replicas.pointFiles(r, null);
        if (point.id !== input.replicaPointId)
          throw new MamoriError(
            'VM_INVALID_STATE',
            `the replica's newest point is ${point.id}, not ${input.replicaPointId}: a cycle ran in between; try again`,
          );
        if (files.length !== input.disks.length)
          throw new MamoriError('INVALID_INPUT', `the replica has ${files.length} disks, the VM ${input.disks.length}`);
        for (const [i, file] of files.entries()) {
          made.push(
            await this.#disks.prepareOverlay({
              name: `${def.name}-mig${i}-${def.id.slice(0, 8)}`,
              backing: file,
              sizeBytes: input.disks[i]!.sizeBytes,
              vmId: def.id,
            }),
          );
        }
      }
      const full: VmDefinition = { ...def, diskIds: made.map((d) => d.id) };
      await this.#repo.createVm(
        full,
        made,
        now,
        replicaId !== null ? { replicaId, pointId: input.replicaPointId! } : null,
      );
    } catch (e) {
      await this.#disks.discardPrepared(made);
      await this.#repo.end(def.id);
      throw e;
    }
    try {
      // The rows committed: the files take their names (a failure here is undone by abort below).
      await this.#disks.placePrepared(made);
      const vm = (await this.#vms.repo.findById(def.id))!;
      await this.#supervisor.start(vm, { incoming: true });
      const qmp = this.#supervisor.qmpOf(def.id)!;
      const dir = await writeQemuTlsCreds({
        dir: join(this.#paths.vmDir(def.id), 'mig-tls'),
        site: this.#tls,
        peerCaPem: peer.caPem,
        endpoint: 'server',
      });
      await qmp.execute('object-add', {
        'qom-type': 'tls-creds-x509',
        id: TLS_ID,
        dir,
        endpoint: 'server',
        'verify-peer': true,
      });
      const host = this.#listenHost();
      const nbdPort = await freePort(host);
      const migrationPort = await freePort(host);
      await qmp.execute('nbd-server-start', {
        addr: { type: 'inet', data: { host, port: String(nbdPort) } },
        'tls-creds': TLS_ID,
      });
      const exports = made.map((_, i) => `disk${i}`);
      for (const name of exports)
        await qmp.execute('block-export-add', {
          type: 'nbd',
          id: `mig-${name}`,
          'node-name': name,
          name,
          writable: true,
        });
      await qmp.execute('migrate-set-capabilities', {
        capabilities: ['events', 'late-block-activate', 'return-path'].map((capability) => ({
          capability,
          state: true,
        })),
      });
      await qmp.execute('migrate-set-parameters', { 'tls-creds': TLS_ID });
      await qmp.execute('migrate-incoming', { uri: `tcp:${host}:${migrationPort}` });
      this.#leases.set(def.id, { renewedAt: Date.now(), leaseMs: (input.leaseSec ?? 90) * 1000 });
      this.#log.info(
        { vm: def.name, from: peer.name, nbdPort, migrationPort },
        'waiting for an incoming live migration',
      );
      return { vmId: def.id, host, nbdPort, exports, migrationPort };
    } catch (e) {
      await this.abort(def.id).catch(() => undefined);
      throw e;
    }
  }

  /** The source still drives the migration of vmId: its lease starts again. */
  async keepalive(vmId: string): Promise<void> {
    const lease = this.#leases.get(vmId);
    if (!lease) throw new MamoriError('VM_INVALID_STATE', `no incoming migration of VM ${vmId} here`);
    lease.renewedAt = Date.now();
  }

  /**
   * A source that went silent (a cut link, a source site that died) cannot call abort, so an
   * incoming copy whose lease ran out removes itself, unless its QEMU received the whole
   * migration: then only the source knows whether it switched over, so it is asked, and
   * asked again a lease later while it does not answer.
   */
  watchLeases(everyMs = 5_000): void {
    if (this.#leaseTimer) return;
    this.#leaseTimer = setInterval(() => void this.#expireLeases(), everyMs);
    this.#leaseTimer.unref();
  }

  stopWatchingLeases(): void {
    if (this.#leaseTimer) clearInterval(this.#leaseTimer);
    this.#leaseTimer = null;
  }

  async #expireLeases(now = Date.now()): Promise<void> {
    for (const [vmId, lease] of this.#leases) {
      if (now - lease.renewedAt < lease.leaseMs) continue;
      const qmp = this.#supervisor.qmpOf(vmId);
      const status = qmp
        ? (await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 }).catch(() => null))?.status
        : undefined;
      if (status === 'completed') {
        lease.renewedAt = now;
        await this.#settleCompleted(vmId);
        continue;
      }
      this.#leases.delete(vmId);
      this.#log.warn(
        { vm: vmId, silentMs: now - lease.renewedAt },
        'the source of an incoming migration went silent: removing the copy',
      );
      await this.abort(vmId).catch((e: unknown) =>
        this.#log.error({ vm: vmId, err: e }, 'could not remove an incoming copy whose source went silent'),
      );
    }
  }

  /** The migration completed: stop serving the disks and run the guest. */
  async activate(vmId: string): Promise<void> {
    const vm = await this.#incoming(vmId);
    const qmp = this.#supervisor.qmpOf(vmId);
    if (!qmp) throw new MamoriError('VM_INVALID_STATE', `the incoming QEMU of ${vm.name} is gone`);
    const status = await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 });
    if (status.status !== 'completed')
      throw new MamoriError(
        'VM_INVALID_STATE',
        `the migration into ${vm.name} is ${status.status ?? 'not started'}, not completed`,
      );
    for (const i of vm.definition.diskIds.keys())
      await qmp.execute('block-export-del', { id: `mig-disk${i}` }).catch(() => undefined);
    await qmp.execute('nbd-server-stop').catch(() => undefined);
    const held = await this.#replicaRepo.replicaHeldByVm(vmId);
    if (held !== undefined) {
      // Replica-aware: replication runs back to the source next, seeded with its disks as they
      // were at this instant (the source is quit, never continued). A bitmap that starts
      // recording before the guest runs here holds exactly what changes after that, so the
      // first reverse cycle (generation 0) is incremental instead of a checksum resync.
      // Added while the disks are still inactive: no write can slip in before it.
      for (const i of replicatedDiskIds(vm.definition).keys()) await ensureBitmap(qmp, `disk${i}`, bitmapName(0));
    }
    await this.#supervisor.activateIncoming(vm);
    // Replica-aware: the replica under the VM's disks stops taking cycles from the old source.
    if (held !== undefined) await this.#replicas.promote(held);
    await this.#vms.repo.clearStateReason(vmId);
    await this.#repo.end(vmId);
    this.#leases.delete(vmId);
  }

  /** Cancel or failure before switchover: the incoming QEMU, its disks and rows go. Idempotent. */
  async abort(vmId: string): Promise<void> {
    const pending = (await this.#repo.sourceOf(vmId)) !== undefined;
    this.#leases.delete(vmId);
    if (!pending) return;
    const vm = await this.#vms.repo.findById(vmId);
    if (vm?.state === 'running')
      throw new MamoriError(
        'VM_INVALID_STATE',
        `${vm.name} already runs here: the migration switched over, it cannot be aborted`,
      );
    if (vm) await this.#vms.delete(vm.name, { force: true });
    await this.#repo.end(vmId);
    this.#log.warn({ vm: vm?.name ?? vmId }, 'incoming migration aborted; its VM and disks are removed');
  }

  /**
   * At server start: an incoming migration the server died in. If its QEMU lived on and
   * received the whole migration, the VM is activated (it is the only copy that may run);
   * otherwise the copy goes, so a destination crash before switchover leaves nothing behind
   * (the source rolls back when it sees the migration fail).
   */
  async repair(): Promise<void> {
    for (const vmId of await this.#repo.pendingVmIds()) {
      const r = { vm_id: vmId };
      const qmp = this.#supervisor.qmpOf(r.vm_id);
      const status = qmp
        ? (await qmp.execute('query-migrate', undefined, { timeoutMs: 10_000 }).catch(() => null))?.status
        : undefined;
      if (status !== 'completed') {
        await this.abort(r.vm_id).catch((e: unknown) =>
          this.#log.error({ vm: r.vm_id, err: e }, 'could not remove an incoming migration cut by a restart'),
        );
        continue;
      }
      // A copy that received the whole migration runs only if the source switched over; until
      // the source answers it waits, asked again each lease.
      this.#leases.set(r.vm_id, { renewedAt: Date.now(), leaseMs: 60_000 });
      await this.#settleCompleted(r.vm_id);
    }
  }

  /** A copy whose QEMU completed: the source says whether it is the VM now (activate) or not (abort). */
  async #settleCompleted(vmId: string): Promise<void> {
    const source = await this.#repo.sourceOf(vmId);
    if (source === undefined) return;
    const answer = await this.#source.outgoingState(source, vmId).catch(() => null);
    const settle = answer === 'switched' ? this.activate(vmId) : answer === 'rolled-back' ? this.abort(vmId) : null;
    if (!settle) {
      this.#log.warn(
        { vm: vmId, source, answer: answer ?? 'unreachable' },
        'an incoming copy received the whole migration; waiting for the source to say whether it switched over',
      );
      return;
    }
    await settle.catch((e: unknown) =>
      this.#log.error({ vm: vmId, err: e }, 'could not settle a completed incoming migration'),
    );
  }

  async #incoming(vmId: string) {
    const vm = await this.#vms.repo.findById(vmId);
    const pending = (await this.#repo.sourceOf(vmId)) !== undefined;
    // 'paused' when a restarted server re-attached the waiting QEMU.
    if (!vm || !pending || !['incoming', 'paused'].includes(vm.state))
      throw new MamoriError('VM_INVALID_STATE', `no incoming migration of VM ${vmId} here`);
    return vm;
  }
}
