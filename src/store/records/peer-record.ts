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
}
