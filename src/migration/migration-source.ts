import type { SitePeers } from '../sites/site-peers.js';
import type { OutgoingState } from './outgoing-state.js';

/**
 * How the destination of a live migration asks its source how the migration ended, given to
 * IncomingMigrations at construction. Only the source can tell whether it switched over, so a
 * copy that received the whole migration runs or goes by its answer.
 */
export interface MigrationSource {
  /** 'unknown' while the source cannot say; rejects when the source cannot be reached. */
  outgoingState(site: string, vmId: string): Promise<OutgoingState>;
}

/** The real one: GET /migrations/outgoing/:vmId at the source site, through its pinned client. */
export function peerMigrationSource(peers: Pick<SitePeers, 'client'>): MigrationSource {
  return {
    async outgoingState(site, vmId) {
      const client = await peers.client(site, { timeoutMs: 10_000 });
      return (await client.request<{ state: OutgoingState }>('GET', `/migrations/outgoing/${vmId}`)).state;
    },
  };
}
