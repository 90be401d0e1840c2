import type { StoreHandle } from '../store/store-handle.js';
import { ProtectionGroupRepo, type ProtectionGroupRecord } from '../store/repos/protection-group-repo.js';
import { ReplicationRepo } from '../store/repos/replication-repo.js';
import { VmRepo } from '../store/repos/vm-repo.js';
import { newShortId } from '../core/ids.js';
import { MamoriError } from '../core/mamori-error.js';
import { assertValidName } from '../core/names.js';
import type { ArrayBinding, ArrayGroups } from '../array-groups/array-groups.js';
import type { ArraySyncView } from '../array-groups/array-group-sync.js';

export interface ProtectionGroupView {
  name: string;
  /** host: mamori replicates its VMs; array: the storage replicates the devices they live on. */
  kind: 'host' | 'array';
  /** The paired site its VMs replicate to (all of them to the same one). */
  peer: string;
  vms: string[];
  /** Array-based groups: the binding, and VMs on the devices the group cannot protect. */
  array?: ArrayBinding & { problems: { vm: string; reason: string }[]; sync: ArraySyncView };
  createdAt: string;
}

/**
 * Protection groups, as in SRM: named sets of replicated VMs that recovery plans recover
 * together. A VM is in at most one group, and every VM of a group replicates to the same
 * paired site, so a plan knows where the group recovers. Membership checks read the
 * replication table: a VM must be replicated before it can be protected.
 */
export class ProtectionGroups {
  #repo: ProtectionGroupRepo;
  #replications: ReplicationRepo;
  #vms: VmRepo;
  #arrays: ArrayGroups | null;

  constructor(db: StoreHandle, arrays: ArrayGroups | null = null) {
    this.#repo = new ProtectionGroupRepo(db);
    this.#replications = new ReplicationRepo(db);
    this.#vms = new VmRepo(db);
    this.#arrays = arrays;
  }

  /**
   * An array-based group: bound to replicated devices of one of this site's arrays, it
   * protects every VM whose disks live on them (see ArrayGroups). Refused for an array the
   * compatibility guide does not support, unless forced.
   */
  async createArray(
    name: string,
    input: {
      storage: string;
      arrayId?: string;
      deviceIds: string[];
      peer: string;
      force: boolean;
      rpo?: string | null;
    },
  ): Promise<ProtectionGroupView> {
    assertValidName('protection group', name);
    if (!this.#arrays) throw new Error('array-based groups are not wired');
    if (await this.#row(name))
      throw new MamoriError('GROUP_EXISTS', `a protection group named ${name} exists; pick another name`, {
        details: { group: name },
      });
    const binding = await this.#arrays.checkBinding(input);
    // Checked again by the repository against the groups as they are when this one is written.
    const assertFree = (others: { name: string; binding: ArrayBinding }[]): void => {
      for (const g of others) {
        const shared =
          g.binding.storage === binding.storage && g.binding.arrayId === binding.arrayId
            ? g.binding.deviceIds.filter((d) => binding.deviceIds.includes(d))
            : [];
        if (shared.length > 0)
          throw new MamoriError(
            'INVALID_INPUT',
            `devices ${shared.join(', ')} are protected by group ${g.name} already; a device is in at most one group`,
            { details: { group: g.name } },
          );
      }
    };
    assertFree(await this.#arrays.bindings());
    await this.#repo.createArrayGroup(newShortId('pg'), name, binding, new Date().toISOString(), assertFree);
    await this.#arrays.scheduler.schedule(name);
    return this.get(name);
  }

  async create(name: string, vmNames: string[]): Promise<ProtectionGroupView> {
    assertValidName('protection group', name);
    if (vmNames.length === 0)
      throw new MamoriError('INVALID_INPUT', `protection group ${name} needs at least one VM (--vm NAME)`);
    if (await this.#row(name))
      throw new MamoriError(
        'GROUP_EXISTS',
        `a protection group named ${name} exists; pick another name or add VMs to it with 'mamori group add ${name} VM'`,
        { details: { group: name } },
      );
    const members = await this.#members(vmNames, null);
    const id = newShortId('pg');
    await this.#repo.createHostGroup(
      id,
      name,
      members.map((m) => m.id),
      new Date().toISOString(),
    );
    return this.get(name);
  }

  async add(name: string, vmName: string): Promise<ProtectionGroupView> {
    const g = await this.#require(name);
    assertHostBased(g);
    const current = await this.get(name);
    const [m] = await this.#members([vmName], g.id, current.peer);
    await this.#repo.addVm(g.id, m!.id);
    return this.get(name);
  }

  async remove(name: string, vmName: string): Promise<ProtectionGroupView> {
    const g = await this.#require(name);
    assertHostBased(g);
    const view = await this.get(name);
    if (!view.vms.includes(vmName))
      throw new MamoriError('NOT_FOUND', `VM ${vmName} is not in protection group ${name}`, {
        details: { group: name, vm: vmName },
      });
    if (view.vms.length === 1)
      throw new MamoriError(
        'INVALID_INPUT',
        `${vmName} is the last VM of protection group ${name}; delete the group instead`,
        { details: { group: name } },
      );
    const vmId = await this.#vms.idOfName(vmName);
    // The repository refuses again, under the group's lock, to remove its last VM.
    if (vmId !== undefined) await this.#repo.removeVm(g.id, vmId);
    return this.get(name);
  }

  async delete(name: string): Promise<void> {
    const g = await this.#require(name);
    await this.#repo.delete(g.id);
  }

  async get(name: string): Promise<ProtectionGroupView> {
    const g = await this.#require(name);
    if (g.arrayBinding !== null && this.#arrays) {
      const binding = g.arrayBinding;
      const m = await this.#arrays.membership(binding);
      const sync = await this.#arrays.scheduler.status(name);
      return {
        name: g.name,
        kind: 'array',
        peer: binding.peer,
        vms: m.members.map((x) => x.vm.name).sort(),
        array: { ...binding, problems: m.problems, sync },
        createdAt: g.createdAt,
      };
    }
    const rows = await this.#repo.members(g.id);
    return {
      name: g.name,
      kind: 'host',
      peer: rows[0]?.peer ?? '',
      vms: rows.map((r) => r.vm),
      createdAt: g.createdAt,
    };
  }

  async list(): Promise<ProtectionGroupView[]> {
    const names = await this.#repo.names();
    return Promise.all(names.map((n) => this.get(n)));
  }

  /** The VMs, checked: they exist, are replicated (all to one site), and are in no other group. */
  async #members(vmNames: string[], groupId: string | null, peer?: string): Promise<{ id: string; name: string }[]> {
    if (new Set(vmNames).size !== vmNames.length)
      throw new MamoriError('INVALID_INPUT', 'a VM is named twice', { details: { vms: vmNames } });
    const out: { id: string; name: string }[] = [];
    let target = peer;
    for (const vmName of vmNames) {
      const id = await this.#vms.idOfName(vmName);
      const vm = id === undefined ? undefined : { id, name: vmName };
      if (!vm)
        throw new MamoriError(
          'VM_NOT_FOUND',
          `no VM named ${JSON.stringify(vmName)} on this site; see 'mamori vm list'`,
          { details: { vm: vmName } },
        );
      const repPeer = await this.#replications.peerOf(vm.id);
      const rep = repPeer === undefined ? undefined : { peer: repPeer };
      if (!rep) {
        throw new MamoriError(
          'INVALID_INPUT',
          `VM ${vmName} is not replicated, so it cannot be protected; enable it first with 'mamori replicate enable ${vmName} --to SITE --rpo 5m'`,
          { details: { vm: vmName } },
        );
      }
      if (target !== undefined && target !== '' && rep.peer !== target) {
        throw new MamoriError(
          'INVALID_INPUT',
          `VM ${vmName} replicates to ${rep.peer}, the group's other VMs to ${target}: a protection group recovers at one site`,
          { details: { vm: vmName, peer: rep.peer, groupPeer: target } },
        );
      }
      target = rep.peer;
      const other = await this.#repo.groupOfVm(vm.id);
      if (other && other.id !== groupId) {
        throw new MamoriError(
          'VM_ALREADY_PROTECTED',
          `VM ${vmName} is in protection group ${other.name}; a VM is in at most one group (remove it there with 'mamori group remove ${other.name} ${vmName}')`,
          { details: { vm: vmName, group: other.name } },
        );
      }
      out.push(vm);
    }
    return out;
  }

  async #row(name: string): Promise<GroupRow | undefined> {
    return this.#repo.find(name);
  }

  async #require(name: string): Promise<GroupRow> {
    const g = await this.#row(name);
    if (!g)
      throw new MamoriError(
        'GROUP_NOT_FOUND',
        `no protection group named ${JSON.stringify(name)} on this site; see 'mamori group list'`,
        { details: { group: name } },
      );
    return g;
  }
}

type GroupRow = ProtectionGroupRecord;

function assertHostBased(g: GroupRow): void {
  if (g.arrayBinding !== null) {
    throw new MamoriError(
      'INVALID_INPUT',
      `protection group ${g.name} is array-based: it protects the VMs whose disks live on its devices; move a VM's disks onto or off the devices instead`,
      { details: { group: g.name } },
    );
  }
}
