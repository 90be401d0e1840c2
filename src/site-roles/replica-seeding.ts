import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { StoreHandle } from '../store/store-handle.js';
import { DiskRepo } from '../store/repos/disk-repo.js';
import { ReplicaRepo } from '../store/repos/replica-repo.js';
import { ReplicationRepo } from '../store/repos/replication-repo.js';
import { RecoveredVmRepo } from '../store/repos/recovered-vm-repo.js';
import type { ReplicaService, ReplicaView } from '../replication/replica-service.js';
import { ReplicaChain, type ChainLayer } from '../replication/replica-chain.js';
import type { VmService } from '../vms/vm-service.js';
import { MamoriError } from '../core/mamori-error.js';
import { replicatedDiskIds } from '../vms/vm-definition.js';
import type { Logger } from '../core/logger.js';
import { seedDiskDelta, writeSeedDelta, type SeedDelta } from '../replication/seed-delta.js';

/**
 * Reprotect's first half at the site a VM failed over from: the VM here is superseded (its
 * copy at the peer runs now), and its disks become the seed of a replica of that copy. Cycles
 * from the peer then compare checksums against them and send only what differs; nothing the
 * peer wrote since the failover is discarded, because the peer's disks are the source.
 *
 * The VM's row and its disk rows go (in one transaction, after the replica exists); the files
 * stay where they are, listed in the replica's manifest as its seed, so nothing can attach
 * and write them any more. Idempotent: a replica already made for the VM is returned.
 */
export class ReplicaSeeding {
  #disks: DiskRepo;
  #replicaRepo: ReplicaRepo;
  #replications: ReplicationRepo;
  #recovered: RecoveredVmRepo;
  #replicas: ReplicaService;
  #vms: VmService;
  #replicasRoot: string;
  #vmsRoot: string;
  #log: Logger;

  constructor(deps: { db: StoreHandle; replicas: ReplicaService; vms: VmService; dataDir: string; log: Logger }) {
    this.#disks = new DiskRepo(deps.db);
    this.#replicaRepo = new ReplicaRepo(deps.db);
    this.#replications = new ReplicationRepo(deps.db);
    this.#recovered = new RecoveredVmRepo(deps.db);
    this.#replicas = deps.replicas;
    this.#vms = deps.vms;
    this.#replicasRoot = join(deps.dataDir, 'replicas');
    this.#vmsRoot = join(deps.dataDir, 'vms');
    this.#log = deps.log;
  }

  async seed(peer: string, vmId: string): Promise<ReplicaView> {
    const existing = await this.#replicaRepo.findBySource(peer, vmId);
    if (existing && existing.promotedAt === null) return this.#replicas.get(existing.id);
    const vm = await this.#vms.repo.findById(vmId);
    if (!vm)
      throw new MamoriError(
        'VM_NOT_FOUND',
        `this site has neither the VM ${vmId} nor a replica of it from ${peer}: nothing to seed from (replicate it afresh instead)`,
        { details: { vmId, peer } },
      );
    const sup = await this.#vms.repo.findSuperseded(vmId);
    if (!sup || sup.bySite !== peer) {
      throw new MamoriError(
        'VM_INVALID_STATE',
        `VM ${vm.name} was not failed over to ${peer}; only a superseded VM's disks can seed a reverse replica`,
        { details: { vm: vm.name } },
      );
    }
    if (!['stopped', 'crashed'].includes(vm.state)) {
      throw new MamoriError(
        'VM_RUNNING',
        `VM ${vm.name} is ${vm.state} here although ${peer} runs it now; stop it (its writes since the failover cannot be kept) before reprotecting`,
        { details: { vm: vm.name, state: vm.state } },
      );
    }
    const disks = await this.#disks.byIds(vm.definition.diskIds);
    const configDrive = disks.find((d) => d.id === vm.definition.configDriveDiskId);
    const ordered = replicatedDiskIds(vm.definition).map((id) => disks.find((d) => d.id === id)!);
    const seeds: ChainLayer[][] = [];
    for (const [i, d] of ordered.entries()) {
      if (d.kind !== 'image')
        throw new MamoriError(
          'RDM_PHYSICAL_REFUSED',
          `disk ${d.name} of ${vm.name} is a device mapping; reprotect seeds from image disks only`,
        );
      seeds.push(await this.#layersOf(vm.id, i, d.path, d.format, d.overlays));
    }
    // What the old disks wrote after their last point (a disaster), read from their
    // replication bitmap before anything changes: the peer's first cycle overwrites it.
    const replication = await this.#replications.find(vm.id);
    const rep = replication?.peer === peer ? replication : undefined;
    const delta: SeedDelta = { disks: [] };
    for (const layers of seeds) {
      delta.disks.push(
        await seedDiskDelta(layers, rep ? { generation: rep.generation, lastPointAt: rep.lastPointAt } : null).catch(
          (e: unknown) => {
            this.#log.warn(
              { vm: vm.name, err: e },
              'could not read what the old disk wrote after its last point; the first reverse cycle compares checksums for it',
            );
            return { known: false as const, reason: `its bitmap could not be read: ${(e as Error).message}` };
          },
        ),
      );
    }
    if (existing) {
      // The replica this VM was recovered from (promoted at its failover) is done as a replica;
      // its files stay, as the lower layers of the seed. It is kept under a retired name so
      // the new replica can take the VM's place. The name holds the replica's id: a VM moved
      // back and forth onto its replicas retires one at each site per round trip, all at the
      // same failover generation (live migrations raise none), and two retired under one name
      // broke the (source site, source VM) key, failing the move's finish.
      await this.#replicaRepo.renameSource(
        existing.id,
        `${vmId}~retired-${existing.failoverGeneration}-${existing.id}`,
      );
    }
    const replica = await this.#replicas.create({
      sourceSite: peer,
      sourceVmId: vm.id,
      vmName: vm.name,
      keepPoints: 24,
      seeds,
      disks: ordered.map((d, index) => ({ index, sizeBytes: d.sizeBytes })),
    });
    // Before the VM's rows go: a crash in between leaves no delta, which the peer takes as unknown (checksums).
    await writeSeedDelta(join(this.#replicasRoot, replica.id), delta);
    // One transaction: a recovered VM's hold on its old replica's point passes to the replica it
    // now seeds; its disk rows go (a config drive is this VM's own and seeds nothing: it goes,
    // file and all, below), then its row.
    await this.#replicaRepo.takeOverSeedVm(
      replica.id,
      vm.id,
      ordered.map((d) => d.id),
    );
    if (configDrive) await rm(configDrive.path, { force: true });
    // Its runtime folder (serial log, sockets, cycle scratch) belonged to the VM row just gone;
    // should the VM come back here, it is recovered or migrated in afresh and gets a new one.
    await rm(join(this.#vmsRoot, vm.id), { recursive: true, force: true });
    this.#log.info(
      { vm: vm.name, replica: replica.id, peer },
      'superseded VM turned into the seed of a reverse replica',
    );
    return replica;
  }

  /**
   * A disk's layers bottom first: a VM recovered here, or migrated here onto its replica, sits
   * on an overlay over a replica point. Both hold that point; the hold names it for a migrated
   * one (which has no recovered record). Without the point's layers the seed was the overlay
   * alone, and absorbing it into the new replica's base dropped all it read from below: a VM
   * moved onto its replicas a third time lost its oldest writes.
   */
  async #layersOf(
    vmId: string,
    position: number,
    path: string,
    format: string,
    overlays: string[],
  ): Promise<ChainLayer[]> {
    const own: ChainLayer[] = [
      { file: path, format: format === 'raw' ? 'raw' : 'qcow2' },
      ...overlays.map((o) => ({ file: o, format: 'qcow2' as const })),
    ];
    const rec = (await this.#recovered.find(vmId)) ?? (await this.#replicaRepo.pointHeldByVm(vmId));
    if (!rec) return own;
    // The overlay's backing is the point's chain in the old replica (read from its manifest).
    const diskPoints = await this.#replicaRepo.diskPointsOf(rec.replicaId, rec.pointId);
    if (diskPoints === undefined)
      throw new MamoriError(
        'NOT_FOUND',
        `the point ${rec.pointId} VM ${vmId} was recovered from is no longer on record in replica ${rec.replicaId}`,
        { details: { replica: rec.replicaId, pointId: rec.pointId } },
      );
    // A recovered disk is named diskN; a migrated one (VM-migN-ID) takes its place among the VM's disks.
    const index = Number(/disk(\d+)\.qcow2$/.exec(path)?.[1] ?? position);
    const chain = await ReplicaChain.open(join(this.#replicasRoot, rec.replicaId, `disk${index}`));
    return [...chain.point(diskPoints[index]!).layers, ...own];
  }
}
