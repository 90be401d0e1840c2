import { createHmac } from 'node:crypto';

/*
 * What the P2V agent (`mamori p2v-agent`, on the machine being converted) and the site that
 * pulls its disk (`mamori convert nbd://HOST:PORT --agent-key KEY`) say to each other.
 *
 * Two channels, both TLS under a CA the agent makes at start and keeps to itself:
 *   - NBD on PORT (qemu-storage-daemon, read-only export `p2v`, client certificate required),
 *     for the disk's bytes;
 *   - HTTPS on PORT+1, for what NBD cannot say: the device's chunk checksums (hashed where
 *     the disk lies, so a pass that resends only changed chunks costs the link only those),
 *     and freezing the device's filesystems for the last pass.
 *
 * Trust rests on the agent key the agent prints, used the way site pairing uses an admin
 * token (src/sites/pairing-proof.ts): the site first fetches the agent's CA without
 * verifying, checks that the TLS session it saw is signed by that CA, and asks for a proof
 * HMAC(SHA-256(key), "hello", CA fingerprint, nonce). Only the holder of the key can make
 * it, and it names the CA the site saw, so a machine in the middle cannot substitute its
 * own. From then on the site talks to the agent only with that CA pinned, and sends the key
 * as a bearer token inside those sessions; the agent then hands out the client certificate
 * its NBD server requires.
 */

export const P2V_PROTOCOL = 'mamori-p2v-v1';
/** The NBD export the agent serves. */
export const P2V_EXPORT = 'p2v';
/** The name in the agent's server certificate (checked by the NBD client; the CA is pinned). */
export const P2V_SERVER_NAME = 'mamori-p2v-agent';
/** Default NBD port, the IANA one; the control channel is the next port. */
export const P2V_DEFAULT_PORT = 10809;
/** Chunks the checksum passes compare; 1 MiB keeps a 2 TiB disk's digests at 64 MiB. */
export const P2V_CHUNK = 1024 * 1024;

export interface P2vHello {
  protocol: string;
  device: string;
  sizeBytes: number;
  /** The agent's CA certificate (PEM): what the site pins once the proof checks. */
  caCert: string;
  proof: string;
  /** Mounted filesystems on the device (or its partitions and device-mapper holders). */
  filesystems: { mountPoint: string; source: string; fsType: string }[];
}

export interface P2vCredentials {
  clientCert: string;
  clientKey: string;
  exportName: string;
  serverName: string;
}

export interface P2vFreezeAnswer {
  /** Mount points frozen now; thawed by POST /p2v/thaw or by the agent's own timer. */
  frozen: string[];
  /** Why the copy cannot be quiesced, when it cannot (nothing mounted, a freeze refused). */
  notFrozenBecause?: string;
  /** Seconds after which the agent thaws by itself, if the site never asks. */
  thawAfterSeconds: number;
}

export function helloProof(key: Buffer, caFingerprint: string, nonce: string): string {
  return createHmac('sha256', key).update(`${P2V_PROTOCOL}\nhello\n${caFingerprint}\n${nonce}`).digest('hex');
}

/** `nbd://HOST:PORT` (IPv6 in brackets) as the agent prints it. */
export function parseAgentUrl(text: string): { host: string; port: number } | null {
  const m = /^nbd:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})\/?$/.exec(text);
  if (!m) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65534) return null;
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}
