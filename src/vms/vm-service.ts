import { uniqueViolation } from '../store/unique-violation.js';
import { readFile, rm } from 'node:fs/promises';
import type { StoreHandle } from '../store/store-handle.js';
import { VmRepo, type VmRow } from '../store/repos/vm-repo.js';
import { DiskRepo, type DiskSummary } from '../store/repos/disk-repo.js';
import type { DiskService } from '../disks/disk-service.js';
import type { DiskRecord } from '../disks/disk-record.js';
import { assertValidName, parseSize } from '../core/names.js';
import { newMacAddress, newUuid } from '../core/ids.js';
import { MamoriError } from '../core/mamori-error.js';
import type { SitePaths } from '../core/site-paths.js';
import type { VmSupervisor } from './vm-supervisor.js';
import {
  DISK_BUSES,
  FIRMWARES,
  NIC_MODELS,
  SATA_PORTS,
  VM_LIMITS,
  WRITELOG_PAYLOADS,
  type DiskBus,
  type Firmware,
  type NicDefinition,
  type NicModel,
  type VmDefinition,
  type WritelogPayload,
} from './vm-definition.js';
import { KeyedLock } from '../jobs/keyed-lock.js';
import { VmSnapshots, type SnapshotView } from './vm-snapshots.js';
import type { VmStartGate } from './vm-start-gate.js';
import type { VmDeleteGuard } from './vm-delete-guard.js';

export interface CreateVmInput {
  name: string;
  vcpus?: number;
  memoryMiB?: number;
  firmware?: Firmware;
  machineType?: string;
  /** Existing disks, by name, attached in this order (after a data disk made here). */
  disks?: string[];
  /** Size of a new qcow2 data disk made for (and deleted with) this VM, e.g. "64M". */
  dataDisk?: string | number;
  testGuest?: boolean;
  writelogRate?: number;
  /** false: the test guest writes no log (it only beats), e.g. an idle guest for a benchmark. */
  writelog?: boolean;
  /** What the log's records carry: random (incompressible, the default) or text (compressible). */
  writelogPayload?: WritelogPayload;
  /** Internal (mamori bench storage; not in the API): the test guest benchmarks its disks. */
  diskbench?: { mib: number; seconds: number };
  acpi?: boolean;
  /** Give the VM a qemu-guest-agent channel (application-consistent replication points). */
  guestAgent?: boolean;
  /** 'sata' for guests without virtio drivers (at most 6 disks). */
  diskBus?: DiskBus;
  nics?: { model?: NicModel; network?: string; mac?: string }[];
  stopTimeoutSec?: number;
}

export interface VmView {
  id: string;
  name: string;
  state: string;
  stateReason: string | null;
  pid: number | null;
  vcpus: number;
  memoryMiB: number;
  firmware: Firmware;
  machineType: string;
  boot: VmDefinition['boot'];
  nics: NicDefinition[];
  disks: {
    name: string;
    kind: string;
    format: string;
    path: string;
    sizeBytes: number;
    rdmMode: string | null;
    shared: boolean;
  }[];
  stopTimeoutSec: number;
  guestAgent: boolean;
  diskBus: DiskBus;
  lastHeartbeatAt: string | null;
  lastHeartbeat: string | null;
  serialLog: string;
  createdAt: string;
}

export interface VmServiceDeps {
  db: StoreHandle;
  paths: SitePaths;
  disks: DiskService;
  supervisor: VmSupervisor;
  resolveMachineType(requested: string): Promise<string>;
  testGuestAvailable(): Promise<void>;
  /** Throws NETWORK_NOT_FOUND for a network this site does not have. */
  networkExists(name: string): Promise<void>;
  /** Every start passes through it (replication's: a start never meets a copy of the stopped VM's images). */
  startGate: VmStartGate;
  /** Asked before a VM or a snapshot is deleted, in order; any may refuse (a desktop pool's master). */
  deleteGuards: readonly VmDeleteGuard[];
}

/** VM definitions and their lifecycle as the API sees them; one operation per VM at a time. */
export class VmService {
  readonly repo: VmRepo;
  #deps: VmServiceDeps;
  #diskRepo: DiskRepo;
  #snapshots: VmSnapshots;
  #lock = new KeyedLock();

  constructor(deps: VmServiceDeps) {
    this.#deps = deps;
    this.repo = new VmRepo(deps.db);
    this.#diskRepo = new DiskRepo(deps.db);
    this.#snapshots = new VmSnapshots(deps.db, deps.disks.poolDir());
  }

  async get(name: string): Promise<VmRow> {
    const vm = await this.repo.findByName(name);
    if (!vm)
      throw new MamoriError('VM_NOT_FOUND', `no VM named ${JSON.stringify(name)} on this site; see 'mamori vm list'`, {
        details: { name },
      });
    return vm;
  }

  async list(): Promise<VmView[]> {
    // Every disk in one query, not one query per VM: a list of 1,000 VMs made 1,001 round
    // trips, a pool's worth on PostgreSQL (bench/store).
    // Shared definitions and disk summaries: an unchanged VM is not parsed again, and only the
    // columns the view shows are read.
    const [vms, disks] = await Promise.all([this.repo.listShared(), this.#diskRepo.listSummaries()]);
    const byId = new Map(disks.map((d) => [d.id, d]));
    return vms.map((vm) => this.#viewWith(vm, byId));
  }

  async view(vm: VmRow): Promise<VmView> {
    const disks = await this.#diskRepo.byIds(vm.definition.diskIds);
    return this.#viewWith(vm, new Map(disks.map((d) => [d.id, d])));
  }

  /** The view of a VM whose disks (at least those it lists) are in `disks`. */
  #viewWith(vm: VmRow, disks: ReadonlyMap<string, DiskSummary>): VmView {
    const hb = this.#deps.supervisor.lastHeartbeat(vm.id);
    const d = vm.definition;
    return {
      id: vm.id,
      name: vm.name,
      state: vm.state,
      stateReason: vm.stateReason,
      pid: vm.pid,
      vcpus: d.vcpus,
      memoryMiB: d.memoryMiB,
      firmware: d.firmware,
      machineType: d.machineType,
      boot: d.boot,
      nics: d.nics,
      disks: d.diskIds
        .map((id) => disks.get(id))
        .filter((x): x is DiskSummary => x !== undefined)
        .map((x) => ({
          name: x.name,
          kind: x.kind,
          format: x.format,
          path: x.path,
          sizeBytes: x.sizeBytes,
          rdmMode: x.rdmMode,
          shared: x.shared,
        })),
      stopTimeoutSec: d.stopTimeoutSec,
      guestAgent: d.guestAgent === true,
      diskBus: d.diskBus ?? 'virtio',
      lastHeartbeatAt: hb?.at ?? vm.lastHeartbeatAt,
      lastHeartbeat: hb?.line ?? null,
      serialLog: this.#deps.paths.serialLog(vm.id),
      createdAt: vm.createdAt,
    };
  }

  async create(input: CreateVmInput): Promise<VmRow> {
    assertValidName('VM', input.name);
    return this.#lock.run(`name:${input.name}`, async () => {
      if (await this.repo.findByName(input.name))
        throw new MamoriError('VM_EXISTS', `a VM named ${input.name} already exists; choose another name`, {
          details: { name: input.name },
        });
      const vcpus = intInRange('vcpus', input.vcpus ?? 1, VM_LIMITS.vcpus);
      const memoryMiB = intInRange('memoryMiB', input.memoryMiB ?? 256, VM_LIMITS.memoryMiB);
      const stopTimeoutSec = intInRange('stopTimeoutSec', input.stopTimeoutSec ?? 60, VM_LIMITS.stopTimeoutSec);
      const firmware = input.firmware ?? 'bios';
      if (!FIRMWARES.includes(firmware))
        throw new MamoriError('INVALID_INPUT', `firmware must be 'bios' or 'uefi', not ${JSON.stringify(firmware)}`);
      const machineType = await this.#deps.resolveMachineType(input.machineType ?? 'q35');
      const writelogRate = intInRange('writelogRate', input.writelogRate ?? 10, VM_LIMITS.writelogRate);
      const writelogPayload = input.writelogPayload ?? 'random';
      if (!WRITELOG_PAYLOADS.includes(writelogPayload))
        throw new MamoriError(
          'INVALID_INPUT',
          `writelogPayload must be one of ${WRITELOG_PAYLOADS.join(', ')}, not ${JSON.stringify(writelogPayload)}`,
        );
      if (input.writelogPayload !== undefined && !input.testGuest)
        throw new MamoriError('INVALID_INPUT', 'writelogPayload is a setting of the test guest: give testGuest too');
      const diskBus = input.diskBus ?? 'virtio';
      if (!DISK_BUSES.includes(diskBus))
        throw new MamoriError(
          'INVALID_INPUT',
          `diskBus must be one of ${DISK_BUSES.join(', ')}, not ${JSON.stringify(diskBus)}`,
        );
      if (input.testGuest) await this.#deps.testGuestAvailable();
      const nics = (input.nics ?? [{}]).map((n, i) => nicDefinition(n, i));
      for (const n of nics) await this.#deps.networkExists(n.network);
      const attach = await this.#attachableDisks(input.disks ?? []);
      const dataSize = input.dataDisk === undefined ? null : parseSize(input.dataDisk);
      if (diskBus === 'sata' && attach.length + (dataSize === null ? 0 : 1) > SATA_PORTS)
        throw new MamoriError(
          'OUT_OF_RANGE',
          `a SATA controller has ${SATA_PORTS} ports: at most ${SATA_PORTS} disks with diskBus sata`,
        );
      const id = newUuid();
      const now = new Date().toISOString();
      // The data disk file is made first at a staging name and removed again if the rows cannot
      // be written, so a failed create leaves neither a file nor a row (src/disks/staged-file.ts).
      const dataDisk =
        dataSize === null
          ? null
          : await this.#deps.disks.prepareImage({
              name: `${input.name}-data`,
              sizeBytes: dataSize,
              vmId: id,
              ownedByVm: true,
            });
      const def: VmDefinition = {
        id,
        name: input.name,
        vcpus,
        memoryMiB,
        firmware,
        machineType,
        diskIds: [...(dataDisk ? [dataDisk.id] : []), ...attach.map((d) => d.id)],
        nics,
        boot: input.testGuest
          ? {
              kind: 'test-guest',
              writelogRate,
              acpi: input.acpi ?? true,
              ...(input.writelog === false ? { writelog: false as const } : {}),
              ...(writelogPayload === 'text' ? { writelogPayload } : {}),
              ...(input.diskbench ? { diskbench: input.diskbench } : {}),
            }
          : { kind: 'disk' },
        stopTimeoutSec,
        ...(input.guestAgent === true ? { guestAgent: true } : {}),
        ...(diskBus === 'sata' ? { diskBus } : {}),
      };
      try {
        await this.repo.create(
          def,
          now,
          dataDisk ? [dataDisk] : [],
          attach.filter((x) => !x.shared).map((d) => d.id),
        );
      } catch (e) {
        if (dataDisk) await this.#deps.disks.discardPrepared([dataDisk]);
        if (uniqueViolation(e) === 'vms.name')
          throw new MamoriError('VM_EXISTS', `a VM named ${def.name} already exists; pick another name`, {
            details: { name: def.name },
          });
        throw e;
      }
      if (dataDisk) await this.#deps.disks.placePrepared([dataDisk]);
      return this.get(def.name);
    });
  }

  async start(name: string, opts: { force?: boolean } = {}): Promise<VmRow> {
    return this.#withVm(name, async (vm) => {
      if (!['stopped', 'crashed'].includes(vm.state))
        throw new MamoriError(
          'VM_INVALID_STATE',
          `VM ${name} is already ${vm.state}; stop it first or use 'mamori vm resume ${name}' if paused`,
          { details: { state: vm.state } },
        );
      await this.#assertNotSuperseded(vm, opts.force === true);
      if (vm.definition.boot.kind === 'test-guest') await this.#deps.testGuestAvailable();
      await this.#deps.startGate.aroundVmStart(vm.id, () => this.#deps.supervisor.start(vm));
    });
  }

  async stop(name: string, opts: { timeoutSec?: number; force?: boolean }): Promise<{ vm: VmRow; forced: boolean }> {
    let forced = false;
    const vm = await this.#withVm(name, async (vm) => {
      const timeoutSec = intInRange(
        'timeoutSec',
        opts.timeoutSec ?? vm.definition.stopTimeoutSec,
        VM_LIMITS.stopTimeoutSec,
      );
      forced = (await this.#deps.supervisor.stop(vm, { timeoutSec, force: opts.force ?? false })).forced;
    });
    return { vm, forced };
  }

  async kill(name: string): Promise<VmRow> {
    return this.#withVm(name, (vm) => this.#deps.supervisor.kill(vm));
  }

  async pause(name: string): Promise<VmRow> {
    return this.#withVm(name, async (vm) => {
      if (vm.state !== 'running')
        throw new MamoriError('VM_INVALID_STATE', `VM ${name} is ${vm.state}; only a running VM can be paused`);
      await this.#deps.supervisor.pause(vm);
    });
  }

  async resume(name: string, opts: { force?: boolean } = {}): Promise<VmRow> {
    return this.#withVm(name, async (vm) => {
      if (vm.state !== 'paused')
        throw new MamoriError('VM_INVALID_STATE', `VM ${name} is ${vm.state}; only a paused VM can be resumed`);
      await this.#assertNotSuperseded(vm, opts.force === true);
      await this.#deps.supervisor.resume(vm);
    });
  }

  async delete(name: string, opts: { force?: boolean }): Promise<void> {
    await this.#withVm(name, async (vm) => {
      for (const guard of this.#deps.deleteGuards) await guard.beforeVmDelete(vm);
      if (!['stopped', 'crashed'].includes(vm.state)) {
        if (!opts.force)
          throw new MamoriError(
            'VM_RUNNING',
            `VM ${name} is ${vm.state}; stop it first, or delete with --force to power it off`,
            { details: { state: vm.state } },
          );
        await this.#deps.supervisor.kill(vm);
      }
      const disks = await this.#diskRepo.byIds(vm.definition.diskIds);
      // One transaction; a recovered VM's hold on the replica point under its disks goes with it.
      await this.repo.deleteWithDisks(vm.id);
      // Files go after the rows: a crash in between leaves an orphan file, never a row without its file.
      for (const d of disks.filter((x) => x.ownedByVm)) {
        for (const o of d.overlays) await rm(o, { force: true });
        if (d.kind === 'image') await rm(d.path, { force: true });
      }
      await rm(this.#deps.paths.vmDir(vm.id), { recursive: true, force: true });
    });
  }

  /**
   * Unregisters a stopped VM and its disks but leaves every disk file where it is: for a VM
   * whose disks live on a replicated array device that became the peer's replica (an
   * array-based reprotect), where the files are the replica's data, not this VM's.
   */
  async forget(name: string): Promise<void> {
    await this.#withVm(name, async (vm) => {
      if (!['stopped', 'crashed'].includes(vm.state))
        throw new MamoriError('VM_RUNNING', `VM ${name} is ${vm.state}; it is forgotten only when off`, {
          details: { state: vm.state },
        });
      await this.repo.forget(vm.id);
      await rm(this.#deps.paths.vmDir(vm.id), { recursive: true, force: true });
    });
  }

  async snapshot(name: string, snapshotName: string): Promise<SnapshotView> {
    let out: SnapshotView | undefined;
    await this.#withVm(name, async (vm) => {
      if (!['stopped', 'crashed', 'running', 'paused'].includes(vm.state))
        throw new MamoriError(
          'VM_INVALID_STATE',
          `VM ${name} is ${vm.state}; snapshot it when it is running, paused or stopped`,
        );
      out = await this.#snapshots.create(vm, snapshotName, this.#deps.supervisor.qmpOf(vm.id));
    });
    return out!;
  }

  /**
   * Deletes a snapshot (its layers merged): offline when the VM is off, through its QEMU when
   * it runs or is paused; guards may refuse (a desktop pool's snapshot).
   */
  async deleteSnapshot(name: string, snapshotName: string): Promise<void> {
    await this.#withVm(name, async (vm) => {
      const off = ['stopped', 'crashed'].includes(vm.state);
      if (!off && !['running', 'paused'].includes(vm.state))
        throw new MamoriError(
          'VM_INVALID_STATE',
          `VM ${name} is ${vm.state}; delete the snapshot when it is running, paused or stopped`,
          { details: { state: vm.state } },
        );
      const qmp = off ? null : this.#deps.supervisor.qmpOf(vm.id);
      if (!off && !qmp)
        throw new MamoriError(
          'VM_INVALID_STATE',
          `VM ${name} is ${vm.state} but mamori has no monitor connection to it; try again once the server has re-attached it`,
          { details: { state: vm.state } },
        );
      for (const guard of this.#deps.deleteGuards) await guard.beforeSnapshotDelete(vm, snapshotName);
      await this.#snapshots.delete(vm, snapshotName, qmp);
    });
  }

  /**
   * Runs `fn` while no other operation of this service runs on the VM (start, stop, snapshot,
   * delete...): for work elsewhere that must see the VM's layers hold still, such as a desktop
   * pool linking a snapshot's layer as its replica (a snapshot delete would write into it).
   */
  async whileHeld<T>(id: string, fn: (vm: VmRow | undefined) => Promise<T>): Promise<T> {
    return this.#lock.run(id, async () => fn(await this.repo.findById(id)));
  }

  async snapshots(name: string): Promise<SnapshotView[]> {
    return this.#snapshots.list(await this.get(name));
  }

  async consoleTail(name: string, lines: number): Promise<string[]> {
    const vm = await this.get(name);
    const text = await readFile(this.#deps.paths.vmRuntime(vm.id).serialLog, 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter((l) => l.length > 0)
      .slice(-lines);
  }

  /**
   * Split-brain safety: a VM whose replica the peer promoted (failover) runs there now; a
   * second copy running here would diverge from it. Only --force starts it, and says why not.
   */
  async #assertNotSuperseded(vm: VmRow, force: boolean): Promise<void> {
    const s = await this.repo.findSuperseded(vm.id);
    if (!s || force) return;
    throw new MamoriError(
      'VM_SUPERSEDED',
      `VM ${vm.name} was failed over to site ${s.bySite} (generation ${s.generation}, ${s.at}): it runs there now, and starting this copy ` +
        `would split it in two. Reprotect from ${s.bySite} to bring it back, or start with --force if the copy at ${s.bySite} is gone`,
      { details: { generation: s.generation, bySite: s.bySite, at: s.at } },
    );
  }

  async #withVm(name: string, fn: (vm: VmRow) => Promise<unknown>): Promise<VmRow> {
    const first = await this.get(name);
    return this.#lock.run(first.id, async () => {
      const vm = await this.get(name);
      await fn(vm);
      return (await this.repo.findById(vm.id)) ?? vm;
    });
  }

  async #attachableDisks(names: string[]): Promise<DiskRecord[]> {
    const out: DiskRecord[] = [];
    for (const n of names) {
      const d = await this.#deps.disks.get(n);
      if (d.vmId && !d.shared)
        throw new MamoriError(
          'DISK_IN_USE',
          `disk ${n} is already attached to another VM; only shared RDM disks can be attached twice`,
        );
      if (out.some((x) => x.id === d.id)) throw new MamoriError('INVALID_INPUT', `disk ${n} is listed twice`);
      out.push(d);
    }
    return out;
  }
}

function intInRange(field: string, v: unknown, range: { min: number; max: number }): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < range.min || v > range.max) {
    throw new MamoriError(
      'OUT_OF_RANGE',
      `${field} must be a whole number from ${range.min} to ${range.max}, got ${JSON.stringify(v)}`,
      { details: { field, min: range.min, max: range.max } },
    );
  }
  return v;
}

function nicDefinition(n: { model?: NicModel; network?: string; mac?: string }, i: number): NicDefinition {
  const model = n.model ?? 'virtio-net-pci';
  if (!NIC_MODELS.includes(model))
    throw new MamoriError('INVALID_INPUT', `NIC ${i}: model must be one of ${NIC_MODELS.join(', ')}`);
  const network = n.network ?? 'user';
  if (typeof network !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(network))
    throw new MamoriError('INVALID_INPUT', `NIC ${i}: network must be 'user', 'none' or the name of a site network`);
  const mac = n.mac ?? newMacAddress();
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac) || (parseInt(mac.slice(0, 2), 16) & 1) === 1)
    throw new MamoriError('INVALID_INPUT', `NIC ${i}: ${mac} is not a unicast MAC address`);
  return { model, network, mac: mac.toLowerCase() };
}
