import { createHmac, timingSafeEqual } from 'node:crypto';
import { pairingKeyOf } from '../store/repos/token-repo.js';

/*
 * How two sites come to trust each other (mamori site pair URL --token PEER_ADMIN_TOKEN).
 *
 * Each site has its own CA (site-tls.ts). Pairing must leave each side holding the other's
 * CA certificate, pinned: from then on every call to the peer verifies the peer's server
 * certificate against that one CA and nothing else (peer-client.ts). The question is how
 * the first copy of the peer's CA is known to be the peer's, and not that of whatever sits
 * between the two sites.
 *
 * Trust on first use is not enough, and neither is sending the peer's admin token as a
 * bearer token over a connection we cannot yet verify: a machine in the middle would read
 * the token and own the peer. So the admin token is used as a shared secret that is never
 * sent, only proven, and the proof is bound to the CA each side actually saw:
 *
 *   1. The local site fetches GET /site/ca from the URL without verifying (it cannot yet):
 *      the peer's name and CA certificate. It checks that the TLS server certificate of
 *      that same connection is signed by that CA. Call its fingerprint F_peer.
 *      If the operator gave --fingerprint, F_peer must equal it, or pairing stops here.
 *   2. From here on it talks to the URL only with that CA pinned. It sends
 *      POST /site/pairing with its own name and CA (F_local), a fresh nonce, the F_peer it
 *      saw, and proof = HMAC(K, "request", F_peer, F_local, name, nonce),
 *      where K = HMAC-SHA256(key = admin token, "mamori pairing key v2").
 *   3. The peer keeps no token in clear: it looks tokens up by SHA-256 (which is not K), and
 *      keeps each admin token's K sealed with DATA/secret.key, a key that is never in the
 *      database (src/core/secret-box.ts). So a copy of the database alone cannot make a
 *      proof, and cannot check one either. (Until v1, K was SHA-256(token), exactly the
 *      stored hash: anyone who could read mamori.db could pair as a site.)
 *      The peer opens its Ks and refuses if none matches (wrong --token:
 *      PEER_AUTH_FAILED), and refuses if F_peer is not its own CA (PEER_CERT_MISMATCH:
 *      someone in the middle terminated TLS with another CA; the proof covers F_peer, so
 *      it cannot be altered on the way). Only then does it create a site-to-site token for
 *      the caller, record the caller's CA as pinned, and answer with the token and
 *      reply = HMAC(K, "reply", F_peer, F_local, nonce, token, peer name).
 *   4. The local site checks the reply: only a holder of K could have made it, so the CA it
 *      pinned belongs to the site whose admin token the operator gave. It stores the peer
 *      (name, URL, CA, the site token); the admin token is not stored anywhere.
 *
 * Why a shared K and not only a public key and a signature: the reply must prove to the
 * requester that the answering side knows the token the operator gave, and a side holding
 * only a public key (or a hash) cannot prove that. So a token-derived secret exists at the
 * answering side, and it is kept sealed by a key outside the database.
 *
 * A man in the middle sees at most an HMAC keyed by a 192-bit random secret over values it
 * chose, learns nothing it can use, and cannot make either side pin its CA. The token the
 * peer issues travels only inside a TLS session verified against the peer's CA.
 * --fingerprint stays available as a second, independent check (compare it with what
 * `mamori site ca` prints on the peer); `mamori site pair` prints the fingerprint it pinned.
 *
 * The operator then runs pair on the other side too, with this site's admin token: that
 * gives the peer a URL and a token to call us. The peer already holds our CA from step 3,
 * and the second pairing must present that same CA, or it is refused (PEER_CERT_MISMATCH):
 * each direction confirms the other.
 */

export const PAIRING_PROOF_VERSION = 'mamori-pair-v2';

/** K from the admin token in clear (the side that was given --token); the peer keeps the same K sealed (TokenRepo.pairingKeys). */
export function pairingKeyFromToken(adminToken: string): Buffer {
  return pairingKeyOf(adminToken);
}

export interface PairingRequestFields {
  peerFingerprint: string;
  callerFingerprint: string;
  callerName: string;
  nonce: string;
}

export interface PairingReplyFields {
  peerFingerprint: string;
  callerFingerprint: string;
  nonce: string;
  token: string;
  peerName: string;
}

function mac(key: Buffer, parts: string[]): string {
  // Newline-separated: none of the fields can contain one (fingerprints, names, base64url).
  return createHmac('sha256', key)
    .update([PAIRING_PROOF_VERSION, ...parts].join('\n'), 'utf8')
    .digest('base64url');
}

export function requestProof(key: Buffer, f: PairingRequestFields): string {
  return mac(key, ['request', f.peerFingerprint, f.callerFingerprint, f.callerName, f.nonce]);
}

export function replyProof(key: Buffer, f: PairingReplyFields): string {
  return mac(key, ['reply', f.peerFingerprint, f.callerFingerprint, f.nonce, f.token, f.peerName]);
}

export function proofsEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
