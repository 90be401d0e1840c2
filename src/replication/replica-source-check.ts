import type { SitePeers } from '../sites/site-peers.js';
import type { ReplicaView } from './replica-service.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';

/**
 * Before a recovery site deletes a replica that still takes cycles: its source site is asked
 * (its inventory lists the VMs it replicates here, with their replica ids). Replicating into
 * it, paused or not, refuses the deletion with the command to run there. A source that does
 * not answer refuses it too, unless `force` (the source site is gone for good); an unpaired
 * source cannot replicate any more.
 */
export async function assertSourceDone(peers: SitePeers, replica: ReplicaView, force: boolean): Promise<void> {
  const src = replica.sourceSite;
  let vms: { name: string; replicaId: string | null }[];
  try {
    const peer = await peers.client(src, { timeoutMs: 10_000 });
    vms = (await peer.request<{ vms: { name: string; replicaId: string | null }[] }>('GET', '/protection/inventory'))
      .vms;
  } catch (e) {
    if (isMamoriError(e, 'PEER_NOT_FOUND') || force) return;
    throw new MamoriError(
      'REPLICA_SOURCE_ACTIVE',
      `could not ask ${src} whether it still replicates ${replica.vmName} into this replica (${(e as Error).message}); ` +
        `disable it there first ('mamori replicate disable ${replica.vmName} --delete-replica' at ${src}), or, if ${src} is gone for good, delete with --force`,
      { details: { replica: replica.id, source: src }, cause: e },
    );
  }
  const vm = vms.find((v) => v.replicaId === replica.id);
  if (vm) {
    throw new MamoriError(
      'REPLICA_SOURCE_ACTIVE',
      `${src} still replicates ${vm.name} into replica ${replica.id}; run 'mamori replicate disable ${vm.name} --delete-replica' at ${src} (it asks this site to delete the replica)`,
      { details: { replica: replica.id, source: src, vm: vm.name } },
    );
  }
}
