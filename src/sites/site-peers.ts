import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import type { PeerRepo } from '../store/repos/peer-repo.js';
import { DEFAULT_LINK_CONCURRENCY, type PeerLink } from '../store/records/peer-record.js';
import { PeerClient, HEALTH_TIMEOUT_MS, type PeerHealth } from './peer-client.js';
import { peerDirection, type PeerRecord, type PeerStatus, type PeerView } from './peer-record.js';

/**
 * The paired sites as the rest of the server uses them: views with reachability for the
 * API, and a pinned PeerClient per peer for whoever must call one (replication, plans).
 */
export class SitePeers {
  #peers: PeerRepo;
  #healthTimeoutMs: number;

  constructor(deps: { peers: PeerRepo; healthTimeoutMs?: number }) {
    this.#peers = deps.peers;
    this.#healthTimeoutMs = deps.healthTimeoutMs ?? HEALTH_TIMEOUT_MS;
  }

  async record(name: string): Promise<PeerRecord> {
    const rec = await this.#peers.findByName(name);
    if (!rec)
      throw new MamoriError(
        'PEER_NOT_FOUND',
        `no paired site named ${JSON.stringify(name)}; 'mamori site list' shows them`,
        { details: { name } },
      );
    return rec;
  }

  /** Every peer's record (the replication scheduler reads each link's budget). */
  async records(): Promise<PeerRecord[]> {
    return this.#peers.list();
  }

  /** Stores a link's replication budget (validated by src/replication/peer-links.ts). */
  async setLink(name: string, link: PeerLink): Promise<void> {
    if (!(await this.#peers.setLink(name, link))) await this.record(name);
  }

  /** A client pinned to the peer's CA with the token it issued us; PEER_AUTH_FAILED if we never paired this way. */
  async client(name: string, opts: { timeoutMs?: number } = {}): Promise<PeerClient> {
    const rec = await this.record(name);
    if (!rec.url || !rec.token) {
      throw new MamoriError(
        'PEER_AUTH_FAILED',
        `${name} paired with this site, but this site has not paired with ${name}: run 'mamori site pair URL_OF_${name} --token ADMIN_TOKEN_OF_${name}' here`,
        { details: { peer: name } },
      );
    }
    return new PeerClient({ ...rec, url: rec.url }, opts);
  }

  /** All peers; with check, each is probed in parallel (one short deadline each, so a dead peer cannot stall the list). */
  async list(opts: { check: boolean }): Promise<PeerView[]> {
    const recs = await this.#peers.list();
    return Promise.all(recs.map((r) => this.#view(r, opts.check)));
  }

  async view(name: string, opts: { check: boolean }): Promise<PeerView> {
    return this.#view(await this.record(name), opts.check);
  }

  /** A strict check: health (round trip, clock) and an authenticated call, or the typed error. */
  async ping(name: string): Promise<PeerHealth & { name: string; knownThereAs: string }> {
    const client = await this.client(name, { timeoutMs: this.#healthTimeoutMs });
    const health = await client.health(this.#healthTimeoutMs);
    const who = await client.get<{ you: string }>('/site/pairing');
    return { name, ...health, knownThereAs: who.you };
  }

  async #view(r: PeerRecord, check: boolean): Promise<PeerView> {
    return {
      name: r.name,
      url: r.url,
      fingerprint: r.caFingerprint,
      direction: peerDirection(r),
      pairedAt: r.createdAt,
      updatedAt: r.updatedAt,
      status: check ? await this.#status(r) : notChecked(r),
      link: {
        bitsPerSecond: r.link?.bitsPerSecond ?? null,
        schedule: r.link?.schedule ?? null,
        concurrency: r.link?.concurrency ?? DEFAULT_LINK_CONCURRENCY,
      },
    };
  }

  async #status(r: PeerRecord): Promise<PeerStatus> {
    if (!r.url) return notChecked(r);
    const checkedAt = new Date().toISOString();
    try {
      const h = await new PeerClient({ ...r, url: r.url }).health(this.#healthTimeoutMs);
      return { state: 'reachable', checkedAt, rttMs: h.rttMs, clockOffsetMs: h.clockOffsetMs, error: null };
    } catch (e) {
      if (!isMamoriError(e)) throw e;
      return {
        state: e.code === 'PEER_CERT_MISMATCH' ? 'cert-mismatch' : 'unreachable',
        checkedAt,
        rttMs: null,
        clockOffsetMs: null,
        error: { code: e.code, message: e.message },
      };
    }
  }
}

function notChecked(r: PeerRecord): PeerStatus {
  return {
    state: r.url ? 'not-checked' : 'not-callable',
    checkedAt: null,
    rttMs: null,
    clockOffsetMs: null,
    error: null,
  };
}
