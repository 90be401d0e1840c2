import type { JobJournal } from '../jobs/job-journal.js';
import { isAbsolute, relative } from 'node:path';
import type { StoreHandle } from '../store/store-handle.js';
import { MamoriError } from '../core/mamori-error.js';
import type { Logger } from '../core/logger.js';
import type { AdapterDevice } from '../adapters/adapter-protocol.js';
import type { StorageArrays } from '../adapters/storage-arrays.js';
import type { VmService } from '../vms/vm-service.js';
import { replicatedDiskIds } from '../vms/vm-definition.js';
import type { VmRow } from '../store/repos/vm-repo.js';
import { DiskRepo } from '../store/repos/disk-repo.js';
import { ProtectionGroupRepo } from '../store/repos/protection-group-repo.js';
import { ReplicationRepo } from '../store/repos/replication-repo.js';
import { VmRepo } from '../store/repos/vm-repo.js';
import { ReplicaRepo } from '../store/repos/replica-repo.js';
import { parseRpo, ARRAY_RPO_LIMITS } from '../replication/rpo-scheduler.js';
import { ArrayGroupSync } from './array-group-sync.js';

import type { ArrayBinding, ArrayDisk } from '../store/records/protection-group-record.js';
// The binding's record types live in store/ (issue 20: protection_groups.array_binding has one codec there); re-exported here.
export type { ArrayBinding, ArrayDisk } from '../store/records/protection-group-record.js';

export interface ArrayMember {
  vm: VmRow;
  disks: ArrayDisk[];
}

export interface ArrayMembership {
  devices: AdapterDevice[];
  members: ArrayMember[];
  /** VMs touching the devices that the group cannot protect, and why. */
  problems: { vm: string; reason: string }[];
}

/**
 * The protected side of array-based protection groups (SRM's array-based replication): a
 * group is bound to replicated devices of one array, and protects every VM whose disks all
 * live on them. Membership is read from where the disks are, each time, so a VM moved onto
 * the devices is protected without a second step. The devices must take their points at one
 * instant (one device, or one consistency group), so the group recovers write-order
 * consistent across its VMs.
 */
export class ArrayGroups {
  #groups: ProtectionGroupRepo;
  #replications: ReplicationRepo;
  #replicas: ReplicaRepo;
  #vmRepo: VmRepo;
  #arrays: StorageArrays;
  #vms: VmService;
  #disks: DiskRepo;
  #log: Logger;
  #peerExists: (name: string) => Promise<void>;
  /** The groups' syncs on their RPO, and the queue every adapter command on a group's devices goes through. */
  readonly scheduler: ArrayGroupSync;

  constructor(deps: {
    db: StoreHandle;
    arrays: StorageArrays;
    vms: VmService;
    log: Logger;
    jobs: JobJournal;
    peerExists: (name: string) => Promise<void>;
  }) {
    this.#groups = new ProtectionGroupRepo(deps.db);
    this.#replications = new ReplicationRepo(deps.db);
    this.#replicas = new ReplicaRepo(deps.db);
    this.#vmRepo = new VmRepo(deps.db);
    this.scheduler = new ArrayGroupSync({ db: deps.db, groups: this, jobs: deps.jobs, log: deps.log });
    this.#peerExists = deps.peerExists;
    this.#arrays = deps.arrays;
    this.#vms = deps.vms;
    this.#disks = new DiskRepo(deps.db);
    this.#log = deps.log;
  }

  /**
   * Checks a binding before a group is made with it: the entry and its array, each device
   * replicated from here with its peer on one peer array, one consistency group, and the
   * compatibility guide's verdict (refused unless forced).
   */
  async checkBinding(input: {
    storage: string;
    arrayId?: string;
    deviceIds: string[];
    peer: string;
    force: boolean;
    rpo?: string | null;
  }): Promise<ArrayBinding> {
    const rpoMs = input.rpo === undefined || input.rpo === null ? null : parseRpo(input.rpo, ARRAY_RPO_LIMITS);
    if (input.rpo !== undefined && input.rpo !== null && rpoMs === null)
      throw new MamoriError(
        'OUT_OF_RANGE',
        `RPO ${JSON.stringify(input.rpo)} is out of range: give ${ARRAY_RPO_LIMITS.minMs / 1000}s to 24h (e.g. 30s, 15m, 4h)`,
      );
    if (input.deviceIds.length === 0)
      throw new MamoriError(
        'INVALID_INPUT',
        "an array-based group needs one or more devices (--device ID); see 'mamori array devices ENTRY'",
      );
    if (new Set(input.deviceIds).size !== input.deviceIds.length)
      throw new MamoriError('INVALID_INPUT', 'a device is named twice');
    await this.#peerExists(input.peer);
    const found = await this.#arrays.devices(input.storage);
    if (input.arrayId === undefined && found.length !== 1) {
      throw new MamoriError(
        'INVALID_INPUT',
        `storage entry ${input.storage} reaches ${found.length} arrays (${found.map((f) => f.arrayId).join(', ')}): name one with --array-id`,
      );
    }
    const arrayId = input.arrayId ?? found[0]!.arrayId;
    const array = found.find((f) => f.arrayId === arrayId);
    if (!array)
      throw new MamoriError(
        'NOT_FOUND',
        `storage entry ${input.storage} does not reach array ${arrayId}; it reaches ${found.map((f) => f.arrayId).join(', ')}`,
      );
    // Supported first: the answer that matters most, before the details of the devices.
    const verdict = await this.#arrays.compatOf(input.storage, arrayId);
    if (!verdict.supported && !input.force) {
      throw new MamoriError(
        'COMPAT_UNSUPPORTED',
        `array ${arrayId} (${verdict.model}, ${verdict.softwareVersion}) with adapter ${verdict.adapter} ${verdict.adapterVersion} is not supported: ${verdict.reason}. Run its adapter through 'mamori adapter test ${verdict.adapter} --config FILE --record GUIDE' and record the result in the compatibility guide, or pass --force to protect it anyway`,
        { details: { arrayId, reason: verdict.reason } },
      );
    }
    const devices = input.deviceIds.map((id) => {
      const d = array.devices.find((x) => x.id === id);
      if (!d)
        throw new MamoriError(
          'NOT_FOUND',
          `array ${arrayId} has no device ${id}; its devices: ${array.devices.map((x) => x.id).join(', ') || 'none'}`,
          { details: { arrayId, device: id } },
        );
      if (d.role !== 'source' || d.peer === null) {
        throw new MamoriError(
          'INVALID_INPUT',
          `device ${id} of array ${arrayId} is ${d.role === 'source' ? 'a source without a peer' : d.role}: a protection group protects devices this array replicates to a peer (role source)`,
          { details: { device: id, role: d.role } },
        );
      }
      return d;
    });
    const peerArrays = new Set(devices.map((d) => d.peer!.arrayId));
    if (peerArrays.size > 1)
      throw new MamoriError(
        'INVALID_INPUT',
        `the devices replicate to different arrays (${[...peerArrays].join(', ')}); a group recovers from one peer array`,
      );
    const groups = new Set(devices.map((d) => d.consistencyGroup));
    if (devices.length > 1 && (groups.size > 1 || groups.has(null))) {
      throw new MamoriError(
        'INVALID_INPUT',
        `devices ${input.deviceIds.join(', ')} are not in one consistency group, so the array cannot take their points at one instant; protect them in separate groups, or put them in one consistency group on the array`,
        { details: { devices: devices.map((d) => ({ id: d.id, consistencyGroup: d.consistencyGroup })) } },
      );
    }
    return {
      storage: input.storage,
      arrayId,
      deviceIds: input.deviceIds,
      peer: input.peer,
      forced: !verdict.supported,
      compat: verdict.reason,
      rpoSeconds: rpoMs === null ? null : rpoMs / 1000,
    };
  }

  /** The group's devices as the array reports them now, and the VMs on them. */
  async membership(b: ArrayBinding): Promise<ArrayMembership> {
    const client = await this.#arrays.client(b.storage);
    const all = (await client.call('discoverDevices', { arrayId: b.arrayId })).devices;
    const devices = b.deviceIds.map((id) => {
      const d = all.find((x) => x.id === id);
      if (!d)
        throw new MamoriError('NOT_FOUND', `array ${b.arrayId} no longer has device ${id}`, {
          details: { arrayId: b.arrayId, device: id },
        });
      return d;
    });
    const members: ArrayMember[] = [];
    const problems: ArrayMembership['problems'] = [];
    for (const vm of await this.#vms.repo.list()) {
      const disks = await this.#disks.byIds(replicatedDiskIds(vm.definition));
      const placed = disks.map((disk) => ({ disk, on: deviceHolding(devices, disk.path, disk.kind) }));
      const on = placed.filter((p) => p.on !== null);
      if (on.length === 0) continue;
      const off = placed.filter((p) => p.on === null).map((p) => p.disk.name);
      if (off.length > 0) {
        problems.push({
          vm: vm.name,
          reason: `disks ${off.join(', ')} are not on the group's devices, so a failover would leave them behind; move them onto the devices`,
        });
        continue;
      }
      // A snapshot overlay names its backing file by this site's path, which the peer's mount does not have.
      const layered = placed.filter((p) => p.disk.overlays.length > 0).map((p) => p.disk.name);
      if (layered.length > 0) {
        problems.push({
          vm: vm.name,
          reason: `disks ${layered.join(', ')} have snapshots (overlays naming this site's paths); delete the VM's snapshots to protect it on the array`,
        });
        continue;
      }
      const replicated = await this.#replications.peerOf(vm.id);
      if (replicated !== undefined) {
        problems.push({
          vm: vm.name,
          reason: `it is also replicated by mamori (to ${replicated}); a VM is protected one way: stop that with 'mamori replicate disable ${vm.name}'`,
        });
        continue;
      }
      members.push({
        vm,
        disks: placed.map(({ disk, on: dev }, index) => ({
          index,
          deviceId: dev!.id,
          peer: dev!.peer!,
          relativePath: disk.kind === 'rdm' ? '' : relative(dev!.path!, disk.path),
          kind: disk.kind,
          format: disk.format,
          sizeBytes: disk.sizeBytes,
        })),
      });
    }
    return { devices, members, problems };
  }

  /** Every array-based group of this site, with its binding. */
  async bindings(): Promise<{ id: string; name: string; binding: ArrayBinding }[]> {
    return this.#groups.arrayGroups();
  }

  async binding(name: string): Promise<ArrayBinding> {
    const r = await this.#groups.find(name);
    if (!r)
      throw new MamoriError(
        'GROUP_NOT_FOUND',
        `no protection group named ${JSON.stringify(name)} on this site; see 'mamori group list'`,
        { details: { group: name } },
      );
    if (r.arrayBinding === null)
      throw new MamoriError(
        'INVALID_INPUT',
        `protection group ${name} is host-based (its VMs are replicated by mamori itself); this needs an array-based group`,
        { details: { group: name } },
      );
    return r.arrayBinding;
  }

  /** One array point of the group's devices now, sent to the peer array; callers go through scheduler (syncNow) so syncs never overlap. */
  async sync(name: string): Promise<{ devices: { id: string; point: string; bytesSent: number }[] }> {
    const b = await this.binding(name);
    const client = await this.#arrays.client(b.storage);
    const r = await client.call('syncOnce', { arrayId: b.arrayId, deviceIds: b.deviceIds });
    this.#log.info({ group: name, devices: r.devices }, 'array-based group synced');
    return r;
  }

  /** Whether the group's VMs here were superseded by a failover at the peer (its devices are the peer's run's now). */
  async failedOverElsewhere(name: string): Promise<boolean> {
    const { members } = await this.membership(await this.binding(name));
    for (const m of members) if (await this.#vmRepo.findSuperseded(m.vm.id)) return true;
    return false;
  }

  /** The array-based group (bound for `peer`) whose devices hold this VM, if any. */
  async groupOfVm(peer: string, vmId: string): Promise<string | null> {
    for (const g of await this.bindings()) {
      if (g.binding.peer !== peer) continue;
      const m = await this.membership(g.binding);
      if (m.members.some((x) => x.vm.id === vmId)) return g.name;
    }
    return null;
  }

  /**
   * Planned migration, at the protected site: the adapter's prepareFailover (devices made
   * read-only, a last point sent). The group's VMs were shut down before, one by one.
   */
  async prepareFailover(peer: string, name: string): Promise<{ devices: { id: string; point: string }[] }> {
    const b = await this.#boundFor(peer, name);
    const running = (await this.membership(b)).members.filter((m) => !['stopped', 'crashed'].includes(m.vm.state));
    if (running.length > 0) {
      throw new MamoriError(
        'VM_RUNNING',
        `VMs ${running.map((m) => m.vm.name).join(', ')} of group ${name} still run here; a device is made read-only only with its VMs off`,
        { details: { vms: running.map((m) => m.vm.name) } },
      );
    }
    const client = await this.#arrays.client(b.storage);
    return this.scheduler.exclusive(name, () =>
      client.call('prepareFailover', { arrayId: b.arrayId, deviceIds: b.deviceIds }),
    );
  }

  /**
   * Reprotect, at the old protected site: its devices become targets of the failed-over ones
   * (rolled back to the newest common point, no full copy), and the group's VMs here, which
   * were superseded by the failover, are forgotten (their disks are the replica's data now).
   * The group goes: it is the other site's to protect from now on. Idempotent: a group
   * already gone answers with nothing to do.
   */
  async prepareReverse(
    peer: string,
    name: string,
  ): Promise<{ devices: { id: string; commonPoint: string }[]; forgotten: string[] }> {
    const row = await this.#groups.find(name);
    if (!row) return { devices: [], forgotten: [] };
    const b = await this.#boundFor(peer, name);
    const members = (await this.membership(b)).members;
    const notSuperseded = [];
    for (const m of members) {
      if (!(await this.#vmRepo.findSuperseded(m.vm.id))) notSuperseded.push(m.vm.name);
    }
    if (notSuperseded.length > 0) {
      throw new MamoriError(
        'INVALID_INPUT',
        `VMs ${notSuperseded.join(', ')} of group ${name} were not failed over to ${peer}; reprotect follows a planned or disaster recovery there`,
        { details: { vms: notSuperseded } },
      );
    }
    const client = await this.#arrays.client(b.storage);
    const r = await this.scheduler.exclusive(name, () =>
      client.call('prepareReverseReplication', { arrayId: b.arrayId, deviceIds: b.deviceIds }),
    );
    for (const m of members) await this.#vms.forget(m.vm.name);
    await this.#groups.delete(row.id);
    this.#log.info(
      { group: name, peer, forgotten: members.map((m) => m.vm.name) },
      'array-based group handed to the peer: devices are targets now',
    );
    return { devices: r.devices, forgotten: members.map((m) => m.vm.name) };
  }

  /**
   * At the recovery site: the protected VMs of `peer` that this site recovered through array
   * failovers (planned or disaster), and when. The peer asks when it comes back.
   */
  async failoversFor(peer: string): Promise<{ sourceVmId: string; at: string; mode: string }[]> {
    return this.#replicas.arrayFailoversFor(peer);
  }

  /**
   * At start, as host-based replication does: did a peer fail this site's array-based
   * groups over while this site was away (a disaster recovery with the link cut)? A VM
   * recovered there after it was made here is superseded: it is paused or kept off, so two
   * copies never run on. A peer that does not answer is asked at the next start.
   */
  async learnFailovers(
    ask: (peer: string) => Promise<{ sourceVmId: string; at: string }[]>,
    markSuperseded: (peer: string, vmId: string, generation: number, reason: string) => Promise<void>,
  ): Promise<void> {
    for (const g of await this.bindings()) {
      try {
        const recovered = await ask(g.binding.peer);
        for (const { vm } of (await this.membership(g.binding)).members) {
          const r = recovered
            .filter((x) => x.sourceVmId === vm.id && x.at > vm.createdAt)
            .sort((x, y) => x.at.localeCompare(y.at))
            .at(-1);
          if (r)
            await markSuperseded(
              g.binding.peer,
              vm.id,
              Math.floor(Date.parse(r.at) / 1000),
              `${g.binding.peer} recovered it from array-based group ${g.name} at ${r.at}`,
            );
        }
      } catch (e) {
        this.#log.info(
          { group: g.name, peer: g.binding.peer, err: (e as Error).message },
          'could not ask the peer about array failovers; asking again at the next start',
        );
      }
    }
  }

  async #boundFor(peer: string, name: string): Promise<ArrayBinding> {
    const b = await this.binding(name);
    if (b.peer !== peer)
      throw new MamoriError('GROUP_NOT_FOUND', `protection group ${name} is not protected for site ${peer}`, {
        details: { group: name },
      });
    return b;
  }
}

/** The device whose data holds this path: a file below a mounted filesystem, or the volume itself. */
function deviceHolding(devices: AdapterDevice[], path: string, kind: 'image' | 'rdm'): AdapterDevice | null {
  for (const d of devices) {
    if (d.path === null) continue;
    if (kind === 'rdm' ? d.kind === 'volume' && d.path === path : d.kind === 'filesystem' && inside(d.path, path))
      return d;
  }
  return null;
}

function inside(dir: string, path: string): boolean {
  const r = relative(dir, path);
  return r !== '' && !r.startsWith('..') && !isAbsolute(r);
}
