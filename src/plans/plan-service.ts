import type { StoreHandle } from '../store/store-handle.js';
import { PlanRepo, type PlanRecord } from '../store/repos/plan-repo.js';
import { PlanRunRepo } from '../store/repos/plan-run-repo.js';
import { ReplicaRepo } from '../store/repos/replica-repo.js';
import { MamoriError } from '../core/mamori-error.js';
import type { SitePeers } from '../sites/site-peers.js';
import {
  checkPlan,
  parsePlanYaml,
  PLAN_DEFAULTS,
  type PlanProblem,
  type PlanSpec,
  type PlanVmOptions,
} from './plan-spec.js';
import type { InventoryMappings, MappingView } from './inventory-mappings.js';
import type { ProtectedInventory, ProtectedVm } from '../site-roles/protected-site.js';
import type { StorageArrays } from '../adapters/storage-arrays.js';
import type { PlanView } from './plan-view.js';

/** An array-based group a plan recovers: the devices this site fails over, through which entry. */
export interface ResolvedArrayGroup {
  name: string;
  /** This site's storage array entry that reaches the peer array. */
  storage: string;
  /** This site's array and devices (the replicas), and the protected site's (the sources). */
  arrayId: string;
  deviceIds: string[];
  sourceArrayId: string;
  sourceDeviceIds: string[];
  /** The protected site paired it with an array the compatibility guide does not support (--force). */
  forced: boolean;
  /** The group's RPO at the protected site: reprotect keeps it for the way back. */
  rpoSeconds: number | null;
}

/** Everything a run needs, resolved and checked against both sites. */
export interface ResolvedPlan {
  spec: PlanSpec;
  peer: string;
  inventory: ProtectedInventory;
  /** Whether the inventory came from the protected site just now (false: the last one seen). */
  inventoryFresh: boolean;
  vms: { vm: ProtectedVm; options: PlanVmOptions; networks: string[]; testNetworks: string[]; pool: string }[];
  arrayGroups: ResolvedArrayGroup[];
}

/**
 * Recovery plans, kept at the recovery site (which must be able to run them with the protected
 * site gone). Applying a plan checks it against both sites (groups and VMs protected for
 * this site, a replica here for each, a mapping for every network and pool) and keeps the
 * protected site's inventory as last seen, for a disaster recovery.
 */
export class PlanService {
  #plans: PlanRepo;
  #runs: PlanRunRepo;
  #replicas: ReplicaRepo;
  #peers: SitePeers;
  #mappings: InventoryMappings;
  #arrays: StorageArrays;

  constructor(deps: { db: StoreHandle; peers: SitePeers; mappings: InventoryMappings; arrays: StorageArrays }) {
    this.#plans = new PlanRepo(deps.db);
    this.#runs = new PlanRunRepo(deps.db);
    this.#replicas = new ReplicaRepo(deps.db);
    this.#arrays = deps.arrays;
    this.#peers = deps.peers;
    this.#mappings = deps.mappings;
  }

  /** Creates or replaces a plan from YAML or JSON; nothing is stored unless every check passes. */
  /**
   * A plan's command steps run programs on this host as the server's user: whoever may write
   * them holds the host. So only an admin applies a plan that has them (mayRunCommands);
   * an operator applies and runs plans without, and runs the ones an admin applied.
   */
  async apply(input: { yaml: string } | { spec: unknown }, opts: { mayRunCommands: boolean }): Promise<PlanView> {
    const spec = 'yaml' in input ? parsePlanYaml(input.yaml) : checkPlan(input.spec);
    const commands = spec.steps.filter((st) => st.action.kind === 'command').length;
    if (commands > 0 && !opts.mayRunCommands) {
      throw new MamoriError(
        'FORBIDDEN',
        `plan ${spec.name} has ${commands} command step${commands === 1 ? '' : 's'}, which run programs on this host: only an admin token may apply it (prompts need no admin)`,
        { details: { plan: spec.name, commandSteps: commands } },
      );
    }
    const peer = await this.#peerOf(spec);
    const inventory = await this.fetchInventory(peer);
    await this.#resolveWith(spec, peer, inventory, true);
    const now = new Date().toISOString();
    await this.#plans.save({ peer, spec, sourceText: 'yaml' in input ? input.yaml : null, inventory, at: now });
    return this.get(spec.name);
  }

  async get(name: string): Promise<PlanView> {
    const r = await this.#row(name);
    const { spec, inventory } = r;
    const vms = inventory.vms
      .filter((v) => covers(spec, v))
      .map((v) => {
        const o = spec.vms[v.name];
        return {
          name: v.name,
          group: v.group,
          priority: o?.priority ?? PLAN_DEFAULTS.priority,
          powerOn: o?.powerOn ?? PLAN_DEFAULTS.powerOn,
          dependsOn: o?.dependsOn ?? [],
        };
      })
      .sort((a, b) => a.priority - b.priority || a.name.localeCompare(b.name));
    return {
      name: r.name,
      protectedSite: r.peer,
      spec,
      vms,
      inventoryTakenAt: inventory.takenAt,
      createdAt: r.createdAt,
      updatedAt: r.updatedAt,
    };
  }

  async list(): Promise<PlanView[]> {
    const names = await this.#plans.names();
    return Promise.all(names.map((n) => this.get(n)));
  }

  async delete(name: string): Promise<void> {
    await this.#row(name);
    // The check and the delete in one locked transaction: no run of the plan starts in between.
    const active = await this.#runs.deletePlanUnlessActive(name);
    if (active !== undefined)
      throw new MamoriError(
        'PLAN_BUSY',
        `plan ${name} has run ${active} in progress; let it end (or cancel it) before deleting the plan`,
        { details: { run: active } },
      );
  }

  /**
   * For a run: the plan checked against the sites as they are now. The protected site's
   * inventory is fetched when it answers (and kept); a disaster run may go on with the last
   * one seen when it does not (allowStale).
   */
  async resolve(name: string, opts: { allowStale: boolean; stored?: boolean }): Promise<ResolvedPlan> {
    const r = await this.#row(name);
    const spec = r.spec;
    let inventory: ProtectedInventory;
    let fresh = true;
    if (opts.stored) {
      inventory = r.inventory;
      return { ...(await this.#resolveWith(spec, r.peer, inventory, false)), inventoryFresh: false };
    }
    try {
      inventory = await this.fetchInventory(r.peer);
      await this.#plans.setInventory(name, inventory);
    } catch (e) {
      if (!opts.allowStale) throw e;
      inventory = r.inventory;
      fresh = false;
    }
    return { ...(await this.#resolveWith(spec, r.peer, inventory, fresh)), inventoryFresh: fresh };
  }

  async fetchInventory(peer: string): Promise<ProtectedInventory> {
    const client = await this.#peers.client(peer, { timeoutMs: 10_000 });
    return client.request<ProtectedInventory>('GET', '/protection/inventory');
  }

  async #resolveWith(
    spec: PlanSpec,
    peer: string,
    inventory: ProtectedInventory,
    fresh: boolean,
  ): Promise<ResolvedPlan> {
    const problems: PlanProblem[] = [];
    const bad = (path: string, message: string): void => void problems.push({ path, line: null, message });
    for (const g of spec.protectionGroups) {
      if (!inventory.groups.some((x) => x.name === g))
        bad('protectionGroups', `${peer} has no protection group ${g} with VMs replicated to this site`);
    }
    for (const vm of spec.protectedVms ?? []) {
      const inv = inventory.vms.find((v) => v.name === vm);
      if (!inv) bad('protectedVms', `${vm} is not a VM of ${peer} replicated to this site`);
      else if (inv.arrayDisks)
        bad(
          'protectedVms',
          `${vm} lives on the devices of array-based group ${inv.group}: the array fails over whole devices, so a plan recovers it with its group (protectionGroups: [${inv.group}])`,
        );
    }
    const arrayGroups: ResolvedArrayGroup[] = [];
    for (const g of inventory.groups.filter((x) => x.array && spec.protectionGroups.includes(x.name))) {
      const a = g.array!;
      try {
        const { storage } = await this.#arrays.locate(a.peerArrayId);
        arrayGroups.push({
          name: g.name,
          storage,
          arrayId: a.peerArrayId,
          deviceIds: a.peerDeviceIds,
          sourceArrayId: a.arrayId,
          sourceDeviceIds: a.deviceIds,
          forced: a.forced,
          rpoSeconds: a.rpoSeconds ?? null,
        });
      } catch (e) {
        bad(
          'protectionGroups',
          `array-based group ${g.name} replicates to array ${a.peerArrayId}, which no storage array entry of this site reaches; add one with 'mamori array add NAME --adapter ADAPTER --connection KEY=VALUE' (${(e as Error).message})`,
        );
      }
    }
    const members = inventory.vms.filter((v) => covers(spec, v));
    for (const vm of Object.keys(spec.vms)) {
      const inv = inventory.vms.find((v) => v.name === vm);
      if (!inv)
        bad(`vms.${vm}`, `${vm} is not a VM protected for this site at ${peer} (unknown, or not replicated here)`);
      else if (!covers(spec, inv)) {
        bad(
          `vms.${vm}`,
          inv.group !== null
            ? `${vm} is in protection group ${inv.group}, which the plan does not recover`
            : `${vm} is in no protection group, and the plan does not name it in protectedVms`,
        );
      }
    }
    const mappings = await this.#mappings.list({ peer });
    const vms: ResolvedPlan['vms'] = [];
    for (const vm of members) {
      const replica = vm.arrayDisks ? true : await this.#replicas.findIdBySource(peer, vm.id);
      if (!replica) bad(`vms.${vm.name}`, `this site holds no replica of ${vm.name}`);
      const networks: string[] = [];
      const testNetworks: string[] = [];
      for (const nic of vm.definition.nics) {
        // A NIC without a link needs no network on either side.
        if (nic.network === 'none') {
          networks.push('none');
          testNetworks.push('none');
          continue;
        }
        const m = find(mappings, 'network', nic.network);
        if (!m) {
          bad(
            `vms.${vm.name}`,
            `${vm.name} has a NIC on ${peer}'s network ${nic.network}, which has no network mapping here; add one with 'mamori mapping set --peer ${peer} network ${nic.network} RECOVERY_NET --test TEST_NET'`,
          );
          continue;
        }
        networks.push(m.target);
        testNetworks.push(m.testTarget ?? 'none');
      }
      // An array-based VM's disks stay on the array's devices: no pool to map.
      const pools = vm.arrayDisks ? [] : [...new Set(vm.disks.map((d) => d.pool))];
      let pool = 'default';
      for (const p of pools) {
        const m = find(mappings, 'pool', p);
        if (!m)
          bad(
            `vms.${vm.name}`,
            `${vm.name} has disks in ${peer}'s pool ${p}, which has no pool mapping here; add one with 'mamori mapping set --peer ${peer} pool ${p} default'`,
          );
        else pool = m.target;
      }
      const options = spec.vms[vm.name] ?? {
        priority: PLAN_DEFAULTS.priority,
        powerOn: PLAN_DEFAULTS.powerOn,
        waitHeartbeatSec: PLAN_DEFAULTS.waitHeartbeatSec,
        dependsOn: [],
      };
      vms.push({ vm, options, networks, testNetworks, pool });
    }
    if (problems.length > 0) {
      const text = problems.map((p) => p.message).join('; ');
      throw new MamoriError(
        'PLAN_INVALID',
        `plan ${spec.name} does not fit the sites${fresh ? '' : ` (as last seen at ${inventory.takenAt})`}, nothing was changed: ${text}`,
        { details: { problems } },
      );
    }
    return { spec, peer, inventory, inventoryFresh: fresh, vms, arrayGroups };
  }

  async #peerOf(spec: PlanSpec): Promise<string> {
    const peers = await this.#peers.list({ check: false });
    if (spec.protectedSite !== null) {
      if (!peers.some((p) => p.name === spec.protectedSite))
        throw new MamoriError(
          'PLAN_INVALID',
          `protectedSite ${spec.protectedSite} is not a site paired with this one; see 'mamori site list'`,
          { details: { problems: [{ path: 'protectedSite', line: null, message: 'unknown site' }] } },
        );
      return spec.protectedSite;
    }
    if (peers.length !== 1) {
      throw new MamoriError(
        'PLAN_INVALID',
        `this site has ${peers.length} paired sites: name the one the plan protects with protectedSite`,
        { details: { problems: [{ path: 'protectedSite', line: null, message: 'protectedSite needed' }] } },
      );
    }
    return peers[0]!.name;
  }

  async #row(name: string): Promise<PlanRecord> {
    const r = await this.#plans.find(name);
    if (!r)
      throw new MamoriError(
        'PLAN_NOT_FOUND',
        `no recovery plan named ${JSON.stringify(name)} on this site; see 'mamori plan list'`,
        { details: { plan: name } },
      );
    return r;
  }
}

/** Whether the plan recovers this VM: its group is in the plan, or the VM is named itself. */
function covers(spec: PlanSpec, vm: ProtectedVm): boolean {
  return (vm.group !== null && spec.protectionGroups.includes(vm.group)) || (spec.protectedVms ?? []).includes(vm.name);
}

function find(mappings: MappingView[], kind: 'network' | 'pool', source: string): MappingView | undefined {
  return mappings.find((m) => m.kind === kind && m.source === source);
}
