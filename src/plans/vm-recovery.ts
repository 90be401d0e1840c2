import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { StoreHandle } from '../store/store-handle.js';
import { journalPointTime, type ReplicaService } from '../replication/replica-service.js';
import type { VmService } from '../vms/vm-service.js';
import type { DiskRecord } from '../disks/disk-record.js';
import { RecoveredVmRepo } from '../store/repos/recovered-vm-repo.js';
import { ReplicaRepo } from '../store/repos/replica-repo.js';
import type { VmDefinition } from '../vms/vm-definition.js';
import { newShortId, newUuid } from '../core/ids.js';
import { createQcow2, type BackingRef } from '../qemu/qemu-img-write.js';
import { MamoriError } from '../core/mamori-error.js';
import { writeNoCloudDrive, type NoCloudInterface } from '../guest/nocloud-drive.js';
import type { ProtectedVm } from '../site-roles/protected-site.js';
import type { IpCustomization } from './plan-spec.js';
import { SITE_POOLS } from './inventory-mappings.js';
import { bitmapName, editImageBitmap } from '../replication/dirty-bitmaps.js';

export type RecoveryMode = 'test' | 'planned' | 'disaster';

export interface RecoverVmInput {
  runId: string;
  mode: RecoveryMode;
  vm: ProtectedVm;
  /** Null: the newest point. */
  pointId: string | null;
  /** This site's network for each of the VM's NICs, in order. */
  networks: string[];
  pool: string;
  ip: IpCustomization | undefined;
}

export interface RecoveredVm {
  vmId: string;
  name: string;
  point: { id: string; time: string };
  /** False when an earlier attempt of the same run step had already made it. */
  created: boolean;
}

/**
 * Makes a VM at this (the recovery) site from a replica point, as one all-or-nothing step:
 * a qcow2 overlay per disk backed by that disk's point file (the replica is never written,
 * so replication into it goes on during a test and the point stays as it was), a NoCloud
 * config drive when the plan customizes the VM's IP, then the rows (VM, disks, a hold that
 * keeps retention off the point, the record of which run made it) in one transaction.
 * Files are made first and removed if the rows cannot be written: a failure leaves nothing.
 */
export class VmRecovery {
  #recovered: RecoveredVmRepo;
  #replicaRepo: ReplicaRepo;
  #replicas: ReplicaService;
  #vms: VmService;
  #poolDir: (pool: string) => string;

  constructor(deps: { db: StoreHandle; replicas: ReplicaService; vms: VmService; poolDir: (pool: string) => string }) {
    this.#recovered = new RecoveredVmRepo(deps.db);
    this.#replicaRepo = new ReplicaRepo(deps.db);
    this.#replicas = deps.replicas;
    this.#vms = deps.vms;
    this.#poolDir = deps.poolDir;
  }

  /** The replica of a protected VM at this site. */
  async replicaOf(peer: string, vm: ProtectedVm): Promise<string> {
    const r = await this.#replicaRepo.findIdBySource(peer, vm.id);
    if (r === undefined)
      throw new MamoriError('NOT_FOUND', `this site holds no replica of ${vm.name} from ${peer}`, {
        details: { vm: vm.name, peer },
      });
    return r;
  }

  /** Idempotent: the VM this run already made for this protected VM, if any. */
  async existing(runId: string, sourceVmId: string): Promise<RecoveredVm | null> {
    const r = await this.#recovered.madeByRunWithPoint(runId, sourceVmId);
    if (r) return { vmId: r.vmId, name: r.name, point: { id: r.pointId, time: r.time }, created: false };
    // A continuous replica's point in time has no point row: its id says its time.
    const j = await this.#recovered.madeByRun(runId, sourceVmId);
    const at = j ? journalPointTime(j.pointId) : null;
    return j && at !== null
      ? { vmId: j.vmId, name: j.name, point: { id: j.pointId, time: new Date(at).toISOString() }, created: false }
      : null;
  }

  async recover(peer: string, input: RecoverVmInput): Promise<RecoveredVm> {
    const done = await this.existing(input.runId, input.vm.id);
    if (done) return done;
    const replicaId = await this.replicaOf(peer, input.vm);
    if (await this.#vms.repo.findByName(input.vm.name)) {
      throw new MamoriError(
        'VM_EXISTS',
        `a VM named ${input.vm.name} already exists at this site; delete or rename it (or clean up an earlier test) before recovering`,
        { details: { vm: input.vm.name } },
      );
    }
    // A test copy gets its own identity; a failover keeps the VM's (UUID, MACs) as SRM does.
    const vmId = input.mode === 'test' ? newUuid() : input.vm.id;
    const made: string[] = [];
    const disks: DiskRecord[] = [];
    const now = new Date().toISOString();
    // A continuous replica's point in time is served, not copied (instant recovery): the
    // overlays stand on its export, which stays while the VM does (a test copy) or until the VM
    // has moved off it (a failover: InstantRecoveries streams it onto its overlays).
    const at = input.pointId === null ? null : journalPointTime(input.pointId);
    try {
      const { point, backings } =
        at === null
          ? await this.#pointBackings(replicaId, input.pointId)
          : // Pending until the VM's rows are written: the watch that lets go of the exports of
            // VMs gone (plans/instant-recoveries.ts) must not take this one for gone meanwhile.
            await this.#replicas.servePointInTime(replicaId, at, vmId, { pending: true });
      if (backings.length !== input.vm.disks.length)
        throw new MamoriError(
          'IMAGE_CORRUPT',
          `the replica of ${input.vm.name} has ${backings.length} disks, the VM ${input.vm.disks.length}`,
        );
      const dir = join(this.#poolDir(input.pool), 'recovered', input.runId);
      await mkdir(dir, { recursive: true });
      for (const [i, backing] of backings.entries()) {
        const path = join(dir, `${input.vm.name}-disk${i}.qcow2`);
        await rm(path, { force: true });
        made.push(path);
        await createQcow2(path, {
          backing,
          // An export-backed overlay is streamed into (block-stream): not the site layout, on
          // which QEMU 7.2's copy-on-read aborts (cdp/instant-recovery.ts says when).
          ...(backing.format === 'raw' ? { layout: 'replica' as const } : {}),
        });
        // A failover: reprotect will replicate this VM back onto the old site's disks, which
        // hold this point (plus, after a disaster, their own later writes). A persistent
        // bitmap that starts before the VM ever runs records exactly what it writes from the
        // point on, so that first reverse cycle (generation 0) sends only that, not a resync.
        if (input.mode !== 'test') await editImageBitmap(path, bitmapName(0), [{ op: 'add' }]);
        disks.push({
          id: newShortId('disk'),
          name: `${input.vm.name}-${input.mode === 'test' ? 'test-' : ''}disk${i}`,
          pool: input.pool,
          kind: 'image',
          format: 'qcow2',
          path,
          sizeBytes: input.vm.disks[i]!.sizeBytes,
          rdmMode: null,
          shared: false,
          vmId,
          ownedByVm: true,
          createdAt: now,
          overlays: [],
        });
      }
      const nics = input.vm.definition.nics.map((n, i) => ({ ...n, network: input.networks[i] ?? 'none' }));
      if (input.ip)
        disks.push(
          await recoveryConfigDrive({
            dir,
            vmName: input.vm.name,
            vmId,
            runId: input.runId,
            test: input.mode === 'test',
            nics,
            ip: input.ip,
            pool: input.pool,
            made,
          }),
        );
      const def: VmDefinition = {
        ...input.vm.definition,
        id: vmId,
        name: input.vm.name,
        nics,
        diskIds: disks.map((d) => d.id),
        ...(input.ip ? { configDriveDiskId: disks.at(-1)!.id } : {}),
      };
      // One transaction: the VM, its disks, the hold on the point and the record of the run.
      await this.#recovered.create({
        def,
        disks,
        now,
        hold: true,
        record: { runId: input.runId, mode: input.mode, replicaId, pointId: point.id, sourceVmId: input.vm.id },
      });
      this.#replicas.confirmPointInTime(vmId);
      return { vmId, name: input.vm.name, point: { id: point.id, time: point.time }, created: true };
    } catch (e) {
      for (const f of made) await rm(f, { force: true });
      await this.#replicas.releasePointInTime(vmId);
      throw e;
    }
  }

  /** A replica point's files as the backings of the recovered VM's overlays. */
  async #pointBackings(
    replicaId: string,
    pointId: string | null,
  ): Promise<{ point: { id: string; time: string }; backings: BackingRef[] }> {
    const { point, files } = await this.#replicas.pointFiles(replicaId, pointId);
    return { point, backings: files.map((file) => ({ file, format: 'qcow2' })) };
  }

  /**
   * Test cleanup: the VM (powered off), its overlays and config drive, its hold on the point,
   * and the run's folder once its last VM is gone. Idempotent.
   */
  async remove(vmId: string): Promise<void> {
    const rec = await this.#recovered.find(vmId);
    const vm = await this.#vms.repo.findById(vmId);
    if (vm) await this.#vms.delete(vm.name, { force: true });
    await this.#replicas.releasePointInTime(vmId);
    await this.#recovered.releaseHold(vmId);
    if (!rec) return;
    await this.#recovered.delete(vmId);
    // Files an interrupted recover step left go with the folder.
    if (!(await this.#recovered.runHasVms(rec.runId)))
      for (const pool of SITE_POOLS)
        await rm(join(this.#poolDir(pool), 'recovered', rec.runId), { recursive: true, force: true });
  }
}

/**
 * The NoCloud config drive that gives a recovered VM its plan's IP (on its first NIC), as
 * the disk record its VM owns; its path goes into `made` before it is written, so the
 * caller removes it if the recovery fails.
 */
export async function recoveryConfigDrive(input: {
  dir: string;
  vmName: string;
  vmId: string;
  runId: string;
  test: boolean;
  nics: { mac: string }[];
  ip: IpCustomization;
  pool: string;
  made: string[];
}): Promise<DiskRecord> {
  const first = input.nics[0];
  if (!first) throw new MamoriError('INVALID_INPUT', `${input.vmName} has no NIC to put the customized IP on`);
  await mkdir(input.dir, { recursive: true });
  const path = join(input.dir, `${input.vmName}-cidata.iso`);
  input.made.push(path);
  const iface: NoCloudInterface = {
    mac: first.mac,
    address: input.ip.address,
    ...(input.ip.gateway ? { gateway: input.ip.gateway } : {}),
    ...(input.ip.dns ? { dns: input.ip.dns } : {}),
  };
  await writeNoCloudDrive(path, {
    instanceId: `${input.vmId}-${input.runId}`,
    hostname: input.vmName,
    interfaces: [iface],
  });
  return {
    id: newShortId('disk'),
    name: `${input.vmName}-${input.test ? 'test-' : ''}cidata`,
    pool: input.pool,
    kind: 'image',
    format: 'raw',
    path,
    sizeBytes: (await stat(path)).size,
    rdmMode: null,
    shared: false,
    vmId: input.vmId,
    ownedByVm: true,
    createdAt: new Date().toISOString(),
    overlays: [],
  };
}
