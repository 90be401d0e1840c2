/**
 * What replication does when it learns that its VM was failed over to the peer (the peer
 * promoted the replica, so the VM here is superseded), given to ReplicationService at
 * construction. ProtectedSite.markSuperseded is the real one: it records the supersession,
 * pauses the VM's replication and pauses the VM if it runs, so two copies never diverge.
 * Replication calls it from learnSupersession (at start) and when a cycle is refused for it.
 */
export interface SupersededHandler {
  markSuperseded(peer: string, vmId: string, generation: number, reason: string): Promise<void>;
}
