import { X509Certificate, randomBytes } from 'node:crypto';
import { httpsJson, TransportError, type HttpsJsonResponse } from '../core/https-json-client.js';
import { pairingKeyFromToken, proofsEqual } from '../sites/pairing-proof.js';
import { certFingerprint, parseCert } from '../sites/cert-fingerprint.js';
import { NbdClient } from '../nbd/nbd-client.js';
import { MamoriError } from '../core/mamori-error.js';
import type { ByteRange } from '../nbd/extent-copy.js';
import { P2V_PROTOCOL, helloProof, type P2vCredentials, type P2vFreezeAnswer, type P2vHello } from './p2v-protocol.js';

/**
 * The converting site's side of the agent's control channel: checks the agent's identity
 * with the key (p2v-protocol.ts), then asks for checksums, freeze and thaw with the agent's
 * CA pinned, and opens the NBD connection the copy reads through.
 */
export class P2vAgentClient {
  readonly host: string;
  readonly port: number;
  readonly hello: P2vHello;
  #key: string;
  #ca: string;
  #credentials: P2vCredentials | null = null;

  private constructor(host: string, port: number, key: string, hello: P2vHello) {
    this.host = host;
    this.port = port;
    this.#key = key;
    this.hello = hello;
    this.#ca = hello.caCert;
  }

  /** Fetches the agent's CA unverified, then accepts it only if the agent proves it holds the key. */
  static async connect(host: string, port: number, key: string): Promise<P2vAgentClient> {
    if (typeof key !== 'string' || key.length < 16)
      throw new MamoriError(
        'INVALID_INPUT',
        'agentKey is missing or too short: give the key `mamori p2v-agent` printed (--agent-key)',
      );
    const nonce = randomBytes(16).toString('hex');
    const res = await call(host, port, { method: 'GET', path: `/p2v/hello?nonce=${nonce}`, trust: { insecure: true } });
    return new P2vAgentClient(
      host,
      port,
      key,
      checkAgentHello(res.json, res.peerCertificate, { host, port, key, nonce }),
    );
  }

  async credentials(): Promise<P2vCredentials> {
    this.#credentials ??= (await this.#call('GET', '/p2v/credentials')) as P2vCredentials;
    return this.#credentials;
  }

  /** A TLS NBD connection to the agent's read-only export. */
  async openNbd(): Promise<NbdClient> {
    const c = await this.credentials();
    return NbdClient.connect(
      { host: this.host, port: this.port },
      {
        exportName: c.exportName,
        tls: { ca: this.#ca, cert: c.clientCert, key: c.clientKey, servername: c.serverName },
      },
    );
  }

  /** SHA-256 per chunk of one span, hashed by the agent where the disk lies. */
  async checksums(span: ByteRange, chunkSize: number): Promise<Buffer> {
    const r = (await this.#call('POST', '/p2v/checksums', { ...span, chunkSize }, 600_000)) as { digests?: string };
    if (typeof r.digests !== 'string')
      throw new MamoriError('PEER_UNREACHABLE', `the agent at ${this.host} answered checksums without digests`);
    return Buffer.from(r.digests, 'base64');
  }

  async freeze(): Promise<P2vFreezeAnswer> {
    return (await this.#call('POST', '/p2v/freeze', {}, 120_000)) as P2vFreezeAnswer;
  }

  async thaw(): Promise<void> {
    await this.#call('POST', '/p2v/thaw', {}, 60_000);
  }

  async #call(method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<unknown> {
    const res = await call(this.host, this.port, {
      method,
      path,
      body,
      trust: { ca: this.#ca },
      timeoutMs,
      headers: { authorization: `Bearer ${this.#key}` },
    });
    return res.json;
  }
}

async function call(
  host: string,
  port: number,
  r: {
    method: string;
    path: string;
    body?: unknown;
    trust: { ca: string } | { insecure: true };
    timeoutMs?: number;
    headers?: Record<string, string>;
  },
): Promise<HttpsJsonResponse> {
  const base = `https://${host.includes(':') ? `[${host}]` : host}:${port + 1}`;
  let res: HttpsJsonResponse;
  try {
    res = await httpsJson({
      url: new URL(r.path, base),
      method: r.method,
      body: r.body,
      trust: r.trust,
      timeoutMs: r.timeoutMs ?? 30_000,
      ...(r.headers ? { headers: r.headers } : {}),
    });
  } catch (e) {
    const why = e instanceof TransportError ? e.message : (e as Error).message;
    throw new MamoriError(
      'PEER_UNREACHABLE',
      `cannot reach the P2V agent's control channel at ${base}: ${why}; is \`mamori p2v-agent\` running there?`,
      { cause: e },
    );
  }
  if (res.status !== 200) {
    const err = res.json as { code?: string; message?: string } | undefined;
    const code = err?.code === 'PEER_AUTH_FAILED' ? 'PEER_AUTH_FAILED' : 'PEER_UNREACHABLE';
    throw new MamoriError(
      code,
      `the P2V agent at ${host} answered ${r.method} ${r.path.split('?')[0]} with HTTP ${res.status}: ${err?.message ?? 'no message'}`,
    );
  }
  return res;
}

/**
 * The agent's hello, fetched without verifying TLS, accepted only when it is this protocol's,
 * its CA signed the TLS certificate the site saw, and its proof shows the agent key (see
 * p2v-protocol.ts). Pure, so that what an agent may answer is fuzzed without one (test/fuzz).
 */
export function checkAgentHello(
  json: unknown,
  peerCertificate: Buffer | null,
  c: { host: string; port: number; key: string; nonce: string },
): P2vHello {
  const hello = json as P2vHello;
  if (hello?.protocol !== P2V_PROTOCOL || typeof hello.caCert !== 'string' || !Number.isSafeInteger(hello.sizeBytes)) {
    throw new MamoriError(
      'PEER_UNREACHABLE',
      `nbd://${c.host}:${c.port} is not a mamori P2V agent of this version (control channel on port ${c.port + 1})`,
    );
  }
  const ca = parseCert(hello.caCert, `CA certificate of the agent at ${c.host}`);
  const leaf = peerCertificate ? new X509Certificate(peerCertificate) : undefined;
  if (!ca.ca || !leaf || !leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) {
    throw new MamoriError(
      'PEER_CERT_MISMATCH',
      `the agent at ${c.host} serves a TLS certificate its own CA did not sign; something between may intercept TLS`,
    );
  }
  if (
    typeof hello.proof !== 'string' ||
    !proofsEqual(helloProof(pairingKeyFromToken(c.key), certFingerprint(ca), c.nonce), hello.proof)
  ) {
    throw new MamoriError(
      'PEER_AUTH_FAILED',
      `the agent at ${c.host} does not hold this agent key (or something between intercepts TLS): check the key the agent printed`,
    );
  }
  return hello;
}
