import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isIP } from 'node:net';
import { createSiteCa, issueSiteCert, TLS_FILES } from '../sites/site-ca.js';
import { pairingKeyFromToken, proofsEqual } from '../sites/pairing-proof.js';
import { certFingerprint } from '../sites/cert-fingerprint.js';
import { StorageDaemon } from '../qemu/storage-daemon.js';
import { NbdClient } from '../nbd/nbd-client.js';
import { chunkDigests } from '../replication/block-checksums.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { freezeAll, mountedFilesystems, thawAll } from './p2v-freeze.js';
import {
  P2V_EXPORT,
  P2V_PROTOCOL,
  P2V_SERVER_NAME,
  helloProof,
  type P2vCredentials,
  type P2vFreezeAnswer,
  type P2vHello,
} from './p2v-protocol.js';

export interface P2vAgentOptions {
  device: string;
  /** Address both channels listen on. */
  host: string;
  /** NBD port; the control channel listens on port + 1. */
  port: number;
  /** Longest a freeze may last if the site never thaws (a site that died mid-pass). */
  freezeLimitSeconds?: number;
  log?: (line: string) => void;
}

type AgentSettings = Required<P2vAgentOptions>;

/**
 * The source side of a P2V (vCenter Converter's agent on the physical machine): serves one
 * block device read-only over NBD with TLS, and answers the converting site's checksum and
 * freeze requests (see p2v-protocol.ts). It writes nothing to the machine it runs on but
 * its own scratch folder under the temporary directory, which it removes when it stops.
 */
export class P2vAgent {
  readonly key: string;
  readonly sizeBytes: number;
  readonly caFingerprint: string;
  #o: AgentSettings;
  #dir: string;
  #daemon: StorageDaemon;
  #local: NbdClient;
  #server: Server | null = null;
  #frozen: string[] = [];
  #thawTimer: NodeJS.Timeout | null = null;
  #caCert: string;
  #keyDigest: Buffer;

  private constructor(
    o: AgentSettings,
    dir: string,
    key: string,
    caCert: string,
    daemon: StorageDaemon,
    local: NbdClient,
  ) {
    this.#o = o;
    this.#dir = dir;
    this.key = key;
    this.#keyDigest = pairingKeyFromToken(key);
    this.#caCert = caCert;
    this.caFingerprint = certFingerprint(caCert);
    this.#daemon = daemon;
    this.#local = local;
    this.sizeBytes = local.size;
  }

  static async start(options: P2vAgentOptions): Promise<P2vAgent> {
    const o: AgentSettings = { freezeLimitSeconds: 120, log: () => undefined, ...options };
    const st = await stat(o.device).catch((e: unknown) => {
      throw new MamoriError(
        'IMAGE_NOT_FOUND',
        `no device at ${o.device}: give the source disk, e.g. --device /dev/sda`,
        { cause: e },
      );
    });
    if (!st.isBlockDevice())
      throw new MamoriError(
        'DEVICE_NOT_BLOCK',
        `${o.device} is not a block device: the agent serves a whole disk, e.g. /dev/sda`,
      );
    if (isIP(o.host) === 0)
      throw new MamoriError('INVALID_INPUT', `--listen must be an IP address, not ${JSON.stringify(o.host)}`);
    if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65534)
      throw new MamoriError('OUT_OF_RANGE', `--port must be 1-65534 (the control channel takes the next port)`);
    const dir = await mkdtemp(join(tmpdir(), 'mamori-p2v-agent-'));
    let daemon: StorageDaemon | null = null;
    try {
      await createSiteCa(dir, 'p2v-agent');
      await issueSiteCert(dir, { kind: 'server', siteName: 'p2v-agent', names: [P2V_SERVER_NAME] });
      await issueSiteCert(dir, { kind: 'client', siteName: 'p2v-converter' });
      daemon = await StorageDaemon.start({
        qmpSocket: join(dir, 'qmp.sock'),
        pidFile: join(dir, 'qemu-storage-daemon.pid'),
        chains: [{ id: 'source', layers: [{ file: o.device, format: 'raw' }], readOnly: true, directIo: true }],
        // The CA is this agent's alone and signs one client certificate: verify-peer is the access check.
        nbd: {
          listen: { type: 'inet', host: o.host, port: o.port },
          tls: { dir, verifyPeer: true },
          maxConnections: 16,
        },
        exports: [{ id: P2V_EXPORT, node: 'source' }],
      });
      const read = (f: string): Promise<string> => readFile(join(dir, f), 'utf8');
      const local = await NbdClient.connect(
        { host: loopbackFor(o.host), port: o.port },
        {
          exportName: P2V_EXPORT,
          metaContexts: ['base:allocation'],
          tls: {
            ca: await read(TLS_FILES.caCert),
            cert: await read(TLS_FILES.clientCert),
            key: await read(TLS_FILES.clientKey),
            servername: P2V_SERVER_NAME,
          },
        },
      );
      const agent = new P2vAgent(
        o,
        dir,
        // Prefixed: a bare base64url key begins with '-' one time in 64, and `--agent-key -Xy...`
        // then reads as another option (node's parseArgs refuses it; a CI run met one).
        `p2v_${randomBytes(18).toString('base64url')}`,
        await read(TLS_FILES.caCert),
        daemon,
        local,
      );
      await agent.#listen();
      return agent;
    } catch (e) {
      if (daemon !== null)
        await StorageDaemon.killLeftover({ qmpSocket: daemon.qmpSocket, pidFile: daemon.pidFile }).catch(
          () => undefined,
        );
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  get url(): string {
    return `nbd://${isIP(this.#o.host) === 6 ? `[${this.#o.host}]` : this.#o.host}:${this.#o.port}`;
  }

  /** Thaws whatever is frozen, stops serving and removes the scratch folder. */
  async stop(): Promise<void> {
    await this.#thaw('the agent is stopping');
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
    this.#server?.closeAllConnections();
    await this.#local.disconnect().catch(() => undefined);
    await StorageDaemon.killLeftover({ qmpSocket: this.#daemon.qmpSocket, pidFile: this.#daemon.pidFile }).catch(
      () => undefined,
    );
    await rm(this.#dir, { recursive: true, force: true });
  }

  async #listen(): Promise<void> {
    const server = createServer(
      {
        key: await readFile(join(this.#dir, TLS_FILES.serverKey)),
        cert: await readFile(join(this.#dir, TLS_FILES.serverCert)),
      },
      (req, res) => void this.#handle(req, res),
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new MamoriError(
            'INVALID_INPUT',
            `cannot listen on ${this.#o.host}:${this.#o.port + 1} for the control channel: ${e.code ?? e.message}`,
          ),
        ),
      );
      server.listen(this.#o.port + 1, this.#o.host, () => resolve());
    });
    this.#server = server;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (status: number, body: unknown): void => {
      const text = JSON.stringify(body);
      res
        .writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
        .end(text);
    };
    try {
      const url = new URL(req.url ?? '/', 'https://agent');
      if (req.method === 'GET' && url.pathname === '/p2v/hello')
        return send(200, await this.#hello(url.searchParams.get('nonce') ?? ''));
      if (!proofsEqual(`Bearer ${this.key}`, req.headers.authorization ?? '')) {
        return send(401, {
          code: 'PEER_AUTH_FAILED',
          message: 'wrong or missing agent key: use the key `mamori p2v-agent` printed',
        });
      }
      const body = req.method === 'POST' ? await readJson(req) : {};
      if (req.method === 'GET' && url.pathname === '/p2v/credentials') return send(200, await this.#credentials());
      if (req.method === 'POST' && url.pathname === '/p2v/checksums') return send(200, await this.#checksums(body));
      if (req.method === 'POST' && url.pathname === '/p2v/freeze') return send(200, await this.#freeze());
      if (req.method === 'POST' && url.pathname === '/p2v/thaw')
        return send(200, { thawed: await this.#thaw('the site asked') });
      return send(404, { code: 'NOT_FOUND', message: `no ${req.method} ${url.pathname} here` });
    } catch (e) {
      const code = isMamoriError(e) ? e.code : 'INTERNAL';
      send(code === 'INVALID_INPUT' || code === 'OUT_OF_RANGE' ? 400 : 500, { code, message: (e as Error).message });
    }
  }

  async #hello(nonce: string): Promise<P2vHello> {
    if (!/^[0-9a-f]{32,64}$/.test(nonce))
      throw new MamoriError('INVALID_INPUT', 'nonce must be 32-64 lowercase hex digits');
    return {
      protocol: P2V_PROTOCOL,
      device: this.#o.device,
      sizeBytes: this.sizeBytes,
      caCert: this.#caCert,
      proof: helloProof(this.#keyDigest, this.caFingerprint, nonce),
      filesystems: await mountedFilesystems(this.#o.device),
    };
  }

  async #credentials(): Promise<P2vCredentials> {
    const read = (f: string): Promise<string> => readFile(join(this.#dir, f), 'utf8');
    this.#o.log('a site connected with the agent key; handing it the NBD client certificate');
    return {
      clientCert: await read(TLS_FILES.clientCert),
      clientKey: await read(TLS_FILES.clientKey),
      exportName: P2V_EXPORT,
      serverName: P2V_SERVER_NAME,
    };
  }

  /** Digests of one span, read here through the same O_DIRECT export the site pulls from. */
  async #checksums(body: Record<string, unknown>): Promise<{ digests: string }> {
    const { offset, length, chunkSize } = body;
    if (typeof offset !== 'number' || typeof length !== 'number' || typeof chunkSize !== 'number') {
      throw new MamoriError('INVALID_INPUT', 'checksums need numbers offset, length and chunkSize');
    }
    const digests = await chunkDigests(this.#local, { offset, length }, chunkSize);
    this.#o.log(`checksums of ${offset}+${length}${this.#frozen.length > 0 ? ' (frozen)' : ''}`);
    return { digests: digests.toString('base64') };
  }

  async #freeze(): Promise<P2vFreezeAnswer> {
    const limit = this.#o.freezeLimitSeconds;
    if (this.#frozen.length > 0) return { frozen: this.#frozen, thawAfterSeconds: limit };
    const filesystems = await mountedFilesystems(this.#o.device);
    if (filesystems.length === 0) {
      this.#o.log('nothing on the device is mounted: nothing to freeze, the last pass is crash-consistent');
      return {
        frozen: [],
        notFrozenBecause: `no filesystem on ${this.#o.device} is mounted here, so none can be frozen`,
        thawAfterSeconds: limit,
      };
    }
    const { frozen, failure } = await freezeAll(filesystems);
    if (failure !== undefined) {
      this.#o.log(`could not freeze: ${failure}; the last pass is crash-consistent`);
      return { frozen: [], notFrozenBecause: failure, thawAfterSeconds: limit };
    }
    this.#frozen = frozen;
    // A site that dies mid-pass must not leave this machine's filesystems frozen.
    this.#thawTimer = setTimeout(() => void this.#thaw(`no thaw came within ${limit} s`), limit * 1000);
    this.#o.log(`froze ${frozen.join(', ')} for the last pass (thawed within ${limit} s at the latest)`);
    return { frozen, thawAfterSeconds: limit };
  }

  async #thaw(why: string): Promise<string[]> {
    if (this.#thawTimer !== null) clearTimeout(this.#thawTimer);
    this.#thawTimer = null;
    const was = this.#frozen;
    this.#frozen = [];
    if (was.length === 0) return [];
    const failed = await thawAll(was);
    this.#o.log(
      `thawed ${was.join(', ')} (${why})${failed.length > 0 ? `; FAILED for ${failed.join('; ')}: run fsfreeze --unfreeze by hand` : ''}`,
    );
    return was;
  }
}

/** The agent reads its own export over loopback when it listens on every address. */
function loopbackFor(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '::1';
  return host;
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  let text = '';
  for await (const chunk of req) {
    text += String(chunk);
    if (text.length > 64 * 1024) throw new MamoriError('INVALID_INPUT', 'request body over 64 KiB');
  }
  try {
    const v = text ? (JSON.parse(text) as unknown) : {};
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch {
    throw new MamoriError('INVALID_INPUT', 'request body is not a JSON object');
  }
}
