// PeerRecord lives in store/ (issue 20: store knows rows, not services); re-exported here for the services.
import type { PeerRecord } from '../store/records/peer-record.js';
export type { PeerRecord } from '../store/records/peer-record.js';

/**
 * Which ways calls can go: 'both' once each side ran pair; 'outbound' when only this side
 * did (we can call the peer, it cannot call us); 'inbound' when only the peer did.
 */
export type PeerDirection = 'both' | 'outbound' | 'inbound';

export type PeerState = 'reachable' | 'unreachable' | 'cert-mismatch' | 'not-callable' | 'not-checked';

export interface PeerStatus {
  state: PeerState;
  checkedAt: string | null;
  rttMs: number | null;
  clockOffsetMs: number | null;
  error: { code: string; message: string } | null;
}

/** What the API shows of a peer: never its token. */
export interface PeerView {
  name: string;
  url: string | null;
  fingerprint: string;
  direction: PeerDirection;
  pairedAt: string;
  updatedAt: string;
  status: PeerStatus;
  /** Replication's budget on the link to this peer ('mamori site link'). */
  link: PeerLinkView;
}

export interface PeerLinkView {
  /** The bandwidth cap, bits per second; null: none. */
  bitsPerSecond: number | null;
  /** When the cap applies, local time of this site; null: always (when there is a cap). */
  schedule: string | null;
  /** Replication cycles in flight at most. */
  concurrency: number;
}

export function peerDirection(p: PeerRecord): PeerDirection {
  const out = p.url !== null && p.token !== null;
  const inb = p.inboundTokenId !== null;
  return out && inb ? 'both' : out ? 'outbound' : 'inbound';
}
