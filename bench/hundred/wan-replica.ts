import type { Socket } from 'node:net';
import { httpsJson } from '../../src/core/https-json-client.js';
import type { ByteRange } from '../../src/nbd/extent-copy.js';
import type { RemoteReplica } from '../../src/replication/replication-cycle.js';
import { CYCLE_STREAM_PROTOCOL, type CycleTarget } from '../../src/replication/replica-cycle-server.js';
import type { ReplicaPointView } from '../../src/replication/replica-service.js';

/** The recovery site over HTTPS across the emulated WAN (recovery-site.ts): each call one request, a fresh connection. */
export class WanRecoverySite {
  readonly url: string;
  readonly caPem: string;

  constructor(url: string, caPem: string) {
    this.url = url;
    this.caPem = caPem;
  }

  async call<T>(method: string, path: string, body: unknown = {}): Promise<T> {
    const res = await httpsJson({
      url: new URL(path, this.url),
      method,
      body,
      trust: { ca: this.caPem },
      timeoutMs: 120_000,
    });
    const json = res.json as { result?: unknown; error?: string } | undefined;
    if (res.status !== 200) throw new Error(`${method} ${path}: HTTP ${res.status} ${json?.error ?? ''}`);
    return json?.result as T;
  }
}

/** One replica at the recovery site, as a source cycle sees it (the peer API's shape). */
export class WanReplica implements RemoteReplica {
  readonly #id: string;
  readonly #site: WanRecoverySite;

  constructor(id: string, site: WanRecoverySite) {
    this.#id = id;
    this.#site = site;
  }

  beginCycle(): Promise<CycleTarget> {
    return this.#site.call<CycleTarget>('POST', `/replicas/${this.#id}/begin`);
  }

  async openStream(cycleId: string, disk: number): Promise<Socket> {
    const res = await httpsJson({
      url: new URL(`/replicas/${this.#id}/cycles/${cycleId}/disks/${disk}/stream`, this.#site.url),
      method: 'GET',
      trust: { ca: this.#site.caPem },
      timeoutMs: 60_000,
      upgrade: CYCLE_STREAM_PROTOCOL,
    });
    if (!res.socket) throw new Error(`no upgrade: HTTP ${res.status} ${JSON.stringify(res.json)}`);
    return res.socket;
  }

  commitCycle(
    cycleId: string,
    meta: { time: string; consistency: 'crash' | 'application' },
  ): Promise<ReplicaPointView> {
    return this.#site.call<ReplicaPointView>('POST', `/replicas/${this.#id}/cycles/${cycleId}/commit`, { meta });
  }

  /** The bench never loses a bitmap, so it never resyncs. */
  checksums(_cycleId: string, _disk: number, _range: ByteRange, _chunk: number): Promise<Buffer> {
    return Promise.reject(new Error('the hundred-VM bench does not resync'));
  }

  async abortCycle(): Promise<void> {
    await this.#site.call('POST', `/replicas/${this.#id}/abort`);
  }
}
