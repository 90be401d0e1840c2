/** A paired site as this site stores it. */
export interface PeerRecord {
  id: string;
  name: string;
  /** null until this side has run pair too (the peer paired with us first). */
  url: string | null;
  caCertPem: string;
  caFingerprint: string;
  /** The token the peer issued to us; null until this side has paired. */
  token: string | null;
  /** The token we issued to the peer; null until the peer has paired with us. */
  inboundTokenId: string | null;
  createdAt: string;
  updatedAt: string;
  /** Replication's budget on the link to this peer; read with the row, written only by PeerRepo.setLink. */
  link?: PeerLink;
}

/** A peer link's replication budget as stored (see src/replication/bandwidth-schedule.ts). */
export interface PeerLink {
  /** The cap in bits per second; null: none. */
  bitsPerSecond: number | null;
  /** The windows the cap applies in, as given ('Mon-Fri 08:00-18:00'); null: always. */
  schedule: string | null;
  /** Cycles in flight at most; null: DEFAULT_LINK_CONCURRENCY. */
  concurrency: number | null;
}

/**
 * Replication cycles a link carries at once unless set: enough to keep a WAN link busy while
 * one cycle freezes or commits, few enough that each still gets a useful share of it.
 */
export const DEFAULT_LINK_CONCURRENCY = 4;
