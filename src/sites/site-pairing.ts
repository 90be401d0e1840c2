import { randomBytes } from 'node:crypto';
import type { Logger } from '../core/logger.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { assertValidName } from '../core/names.js';
import { newShortId } from '../core/ids.js';
import { KeyedLock } from '../jobs/keyed-lock.js';
import type { TokenRepo } from '../store/repos/token-repo.js';
import type { PeerRepo } from '../store/repos/peer-repo.js';
import { certFingerprint, normalizeFingerprint, parseCert } from './cert-fingerprint.js';
import { PeerClient, fetchSiteIdentity, peerUrl, type SiteIdentity } from './peer-client.js';
import { pairingKeyFromToken, proofsEqual, replyProof, requestProof } from './pairing-proof.js';
import type { PeerRecord } from './peer-record.js';
import type { SiteTls } from './site-tls.js';

export interface PairInput {
  url: string;
  /** The peer's admin token: used for the proof only, never sent, never stored. */
  token: string;
  name?: string;
  fingerprint?: string;
}

/** POST /site/pairing, from the site that runs pair to the site it pairs with. */
export interface PairingRequestBody {
  name: string;
  caCertPem: string;
  peerFingerprint: string;
  nonce: string;
  proof: string;
}

export interface PairingReplyBody {
  name: string;
  fingerprint: string;
  token: string;
  proof: string;
}

export interface UnpairResult {
  name: string;
  peerNotified: boolean;
  peerError: { code: string; message: string } | null;
}

/**
 * Both halves of pairing (the trust design is in pairing-proof.ts): `pair` runs on the site
 * the operator asked, `accept` on the peer it calls; `unpair` and `forget` undo them.
 * Nothing is stored on either side unless the whole exchange checks out.
 */
export class SitePairing {
  #siteName: string;
  #tls: SiteTls;
  #peers: PeerRepo;
  #tokens: TokenRepo;
  #log: Logger;
  #lock = new KeyedLock();

  constructor(deps: { siteName: string; tls: SiteTls; peers: PeerRepo; tokens: TokenRepo; log: Logger }) {
    this.#siteName = deps.siteName;
    this.#tls = deps.tls;
    this.#peers = deps.peers;
    this.#tokens = deps.tokens;
    this.#log = deps.log;
  }

  /** GET /site/ca: this site's name and CA, public. */
  identity(): SiteIdentity {
    return {
      name: this.#siteName,
      caCertPem: this.#tls.caCertPem,
      fingerprint: this.#tls.caFingerprint,
      time: Date.now(),
    };
  }

  async pair(input: PairInput): Promise<PeerRecord> {
    peerUrl(input.url, '/'); // https:// only, a parseable URL
    if (!input.token.trim())
      throw new MamoriError(
        'INVALID_INPUT',
        "--token must be the peer's admin token (PEER_DATA/admin-token on that site)",
      );
    if (input.name !== undefined) assertValidName('site', input.name);
    const expected = input.fingerprint === undefined ? undefined : normalizeFingerprint(input.fingerprint);
    const url = input.url.replace(/\/+$/, '');

    const peer = await fetchSiteIdentity(url);
    if (expected && peer.fingerprint !== expected) {
      throw new MamoriError(
        'PEER_CERT_MISMATCH',
        `the site at ${url} presents CA ${peer.fingerprint}, not the ${expected} given with --fingerprint: nothing was paired`,
        { details: { url, expectedFingerprint: expected, presentedFingerprint: peer.fingerprint } },
      );
    }
    if (peer.fingerprint === this.#tls.caFingerprint)
      throw new MamoriError('INVALID_INPUT', `${url} is this site itself (same CA); give the URL of the other site`);
    if (peer.name === this.#siteName) throw sameName(peer.name);
    const name = input.name ?? peer.name;
    assertValidName('site', name);

    return this.#lock.run('pairing', async () => {
      const existing = await this.#checkNameFree(name, peer.fingerprint, url);
      const nonce = randomBytes(32).toString('base64url');
      const key = pairingKeyFromToken(input.token.trim());
      const body: PairingRequestBody = {
        name: this.#siteName,
        caCertPem: this.#tls.caCertPem,
        peerFingerprint: peer.fingerprint,
        nonce,
        proof: requestProof(key, {
          peerFingerprint: peer.fingerprint,
          callerFingerprint: this.#tls.caFingerprint,
          callerName: this.#siteName,
          nonce,
        }),
      };
      // From here on the peer's CA is pinned: the token it issues travels only to that CA's holder.
      const client = new PeerClient({
        name,
        url,
        caCertPem: peer.caCertPem,
        caFingerprint: peer.fingerprint,
        token: null,
      });
      let reply: PairingReplyBody;
      try {
        reply = await client.request<PairingReplyBody>('POST', '/site/pairing', body, { auth: false });
      } catch (e) {
        if (isMamoriError(e, 'PEER_AUTH_FAILED')) {
          throw new MamoriError(
            'PEER_AUTH_FAILED',
            `${url} refused the pairing: --token is not that site's admin token (it is in DATA/admin-token on that site); nothing was paired`,
            { details: { url, ...e.details } },
          );
        }
        throw e;
      }
      const expectedReply = replyProof(key, {
        peerFingerprint: peer.fingerprint,
        callerFingerprint: this.#tls.caFingerprint,
        nonce,
        token: String(reply.token),
        peerName: String(reply.name),
      });
      if (
        typeof reply.proof !== 'string' ||
        !proofsEqual(reply.proof, expectedReply) ||
        reply.fingerprint !== peer.fingerprint
      ) {
        throw new MamoriError(
          'PEER_AUTH_FAILED',
          `the site at ${url} could not prove it holds the admin token given: it is not the site you meant, or something in between answered; nothing was paired`,
          { details: { url } },
        );
      }
      const now = new Date().toISOString();
      const record: PeerRecord = existing
        ? { ...existing, name, url, token: reply.token, updatedAt: now }
        : {
            id: newShortId('peer'),
            name,
            url,
            caCertPem: peer.caCertPem,
            caFingerprint: peer.fingerprint,
            token: reply.token,
            inboundTokenId: null,
            createdAt: now,
            updatedAt: now,
          };
      await this.#peers.save(record);
      this.#log.info({ peer: name, url, fingerprint: peer.fingerprint }, 'paired with site');
      return record;
    });
  }

  /** The peer's half: checks the proof, pins the caller's CA, issues it a site token. */
  async accept(body: PairingRequestBody): Promise<PairingReplyBody> {
    assertValidName('site', body.name);
    const callerCa = parseCert(body.caCertPem, "caller's CA certificate");
    if (!callerCa.ca || !callerCa.verify(callerCa.publicKey))
      throw new MamoriError('INVALID_INPUT', "the caller's CA certificate is not a self-signed CA");
    const callerFingerprint = certFingerprint(callerCa);
    const fields = {
      peerFingerprint: body.peerFingerprint,
      callerFingerprint,
      callerName: body.name,
      nonce: body.nonce,
    };
    const key = (await this.#tokens.pairingKeys()).find((k) => proofsEqual(requestProof(k, fields), body.proof));
    if (!key)
      throw new MamoriError(
        'UNAUTHORIZED',
        "the pairing request is not signed with an admin token of this site (an admin token made before pairing keys were sealed cannot pair: the server's log says so at start)",
      );
    const own = this.#tls.caFingerprint;
    if (body.peerFingerprint !== own) {
      throw new MamoriError(
        'PEER_CERT_MISMATCH',
        `the pairing request saw CA ${body.peerFingerprint} at this site's URL, but this site's CA is ${own}: something between the sites terminates TLS; nothing was paired`,
        { details: { expectedFingerprint: own, presentedFingerprint: body.peerFingerprint } },
      );
    }
    if (callerFingerprint === own) throw new MamoriError('INVALID_INPUT', 'a site cannot pair with itself');
    if (body.name === this.#siteName) throw sameName(body.name);

    return this.#lock.run('pairing', async () => {
      const existing =
        (await this.#peers.findByFingerprint(callerFingerprint)) ??
        (await this.#checkNameFree(body.name, callerFingerprint, null));
      const name = existing?.name ?? body.name;
      const issued = await this.#tokens.createWithId(`site:${name}`, 'site');
      const now = new Date().toISOString();
      const record: PeerRecord = existing
        ? { ...existing, inboundTokenId: issued.id, updatedAt: now }
        : {
            id: newShortId('peer'),
            name,
            url: null,
            caCertPem: body.caCertPem,
            caFingerprint: callerFingerprint,
            token: null,
            inboundTokenId: issued.id,
            createdAt: now,
            updatedAt: now,
          };
      await this.#peers.save(record);
      if (existing?.inboundTokenId) await this.#tokens.revoke(existing.inboundTokenId);
      this.#log.info({ peer: name, fingerprint: callerFingerprint }, 'accepted pairing from site');
      return {
        name: this.#siteName,
        fingerprint: own,
        token: issued.token,
        proof: replyProof(key, {
          peerFingerprint: own,
          callerFingerprint,
          nonce: body.nonce,
          token: issued.token,
          peerName: this.#siteName,
        }),
      };
    });
  }

  /** Removes the pairing here, and asks the peer to forget us too when it can be reached. */
  async unpair(name: string): Promise<UnpairResult> {
    return this.#lock.run('pairing', async () => {
      const rec = await this.#peers.findByName(name);
      if (!rec)
        throw new MamoriError(
          'PEER_NOT_FOUND',
          `no paired site named ${JSON.stringify(name)}; 'mamori site list' shows them`,
          { details: { name } },
        );
      let peerNotified = false;
      let peerError: UnpairResult['peerError'] = null;
      if (rec.url && rec.token) {
        try {
          await new PeerClient({ ...rec, url: rec.url }).delete('/site/pairing', { timeoutMs: 5_000 });
          peerNotified = true;
        } catch (e) {
          peerError = isMamoriError(e)
            ? { code: e.code, message: e.message }
            : { code: 'INTERNAL', message: String(e) };
          this.#log.warn(
            { peer: name, err: e },
            'unpair: the peer could not be told; it keeps its side until unpaired there',
          );
        }
      }
      if (rec.inboundTokenId) await this.#tokens.revoke(rec.inboundTokenId);
      await this.#peers.delete(rec.id);
      this.#log.info({ peer: name, peerNotified }, 'unpaired site');
      return { name, peerNotified, peerError };
    });
  }

  /** DELETE /site/pairing: the peer calling with the token we issued it unpaired; forget it. */
  async forget(callerTokenId: string): Promise<{ forgotten: string }> {
    return this.#lock.run('pairing', async () => {
      const rec = await this.#peers.findByInboundToken(callerTokenId);
      if (!rec) throw new MamoriError('PEER_NOT_FOUND', 'this token belongs to no paired site here');
      await this.#tokens.revoke(callerTokenId);
      await this.#peers.delete(rec.id);
      this.#log.info({ peer: rec.name }, 'the peer unpaired; forgot it');
      return { forgotten: rec.name };
    });
  }

  /** GET /site/pairing: which peer this token is, as seen from here. */
  async whoCalls(callerTokenId: string): Promise<{ site: string; you: string; time: number }> {
    const rec = await this.#peers.findByInboundToken(callerTokenId);
    if (!rec) throw new MamoriError('PEER_NOT_FOUND', 'this token belongs to no paired site here');
    return { site: this.#siteName, you: rec.name, time: Date.now() };
  }

  /** A name bound to another CA cannot be reused: unpair it first. Returns the record for this CA, if any. */
  async #checkNameFree(name: string, fingerprint: string, url: string | null): Promise<PeerRecord | undefined> {
    const byName = await this.#peers.findByName(name);
    if (byName && byName.caFingerprint !== fingerprint) {
      throw new MamoriError(
        'PEER_CERT_MISMATCH',
        `a site named ${name} is already paired here with CA ${byName.caFingerprint}, but ${url ?? 'the caller'} presents CA ${fingerprint}. If ${name} was reinstalled, 'mamori site unpair ${name}' first; nothing was paired`,
        { details: { name, expectedFingerprint: byName.caFingerprint, presentedFingerprint: fingerprint } },
      );
    }
    // The same site may be known here by another name (it paired with us first): renamed.
    return byName ?? (await this.#peers.findByFingerprint(fingerprint));
  }
}

/** Two sites with one name would make every "which site" question ambiguous (replicas, plans). */
function sameName(name: string): MamoriError {
  return new MamoriError(
    'INVALID_INPUT',
    `both sites are named ${name}: give each site its own name (mamori serve --data DIR --name SITE) before pairing them`,
    { details: { name } },
  );
}
