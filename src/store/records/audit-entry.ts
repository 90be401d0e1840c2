/* The audit log's records, apart from the chain's logic so the store can keep them without importing it. */

/** What is recorded of one API call. */
export interface AuditRecord {
  /** ISO time the answer was sent. */
  at: string;
  /** The caller's token and role; null when no valid token was sent (public route, 401). */
  tokenId: string | null;
  role: string | null;
  /** The caller's address as the server saw it. */
  source: string;
  method: string;
  /** The route's pattern (`/vms/:name/start`), never the URL: the target says which VM. */
  route: string;
  /** The route's parameters (the VM name, ...), each truncated; null when it has none. */
  target: Record<string, string> | null;
  status: number;
  /** The error's code when the call failed (VM_NOT_FOUND, UNAUTHORIZED, ...). */
  errorCode: string | null;
  requestId: string | null;
}

/** A record as stored: its place in the chain and the hashes that bind it there. */
export interface AuditEntry extends AuditRecord {
  seq: number;
  prevHash: string;
  hash: string;
}

/** The newest entry's number and hash, kept apart from the entries (so removing the newest shows). */
export interface ChainHead {
  seq: number;
  hash: string;
}

export interface AuditFilter {
  /** Entries at or after this ISO time. */
  since?: string;
  tokenId?: string;
  /** Entries older than this one (paging back). */
  beforeSeq?: number;
  limit: number;
}
