import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { NbdClient } from '../nbd/nbd-client.js';
import { allocatedExtents, copyExtents, dirtyExtents, type ByteRange, type CopyCounters, type CopyTarget } from '../nbd/extent-copy.js';
import {
  abortFleecingPoint, abortOfflineFleecingPoint, completeFleecingPoint, completeOfflineFleecingPoint,
  createFleecingPoint, createOfflineFleecingPoint, type FleecingPoint, type OfflineFleecingPoint,
} from './fleecing-point.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import type { DaemonLayer } from '../qemu/storage-daemon.js';
import type { CycleTarget, ReplicaPointView } from './replica-service.js';

/** What the source needs of the recovery site for one cycle (the peer's replica API). */
export interface RemoteReplica {
  beginCycle(): Promise<CycleTarget>;
  commitCycle(cycleId: string, meta: { time: string; consistency: 'crash' | 'application' }): Promise<ReplicaPointView>;
  abortCycle(): Promise<void>;
}

export interface CycleTls {
  /** The peer's pinned CA: the replica's NBD server must chain to it. */
  peerCaPem: string;
  clientCertPem: string;
  clientKeyPem: string;
}

export interface CycleResult {
  point: ReplicaPointView;
  generation: number;
  mode: 'full' | 'incremental' | 'resync';
  /** Bytes of data sent to the recovery site (NBD WRITE payloads). */
  bytesSent: number;
  /** Bytes the source marked as needing a copy (dirty or allocated extents). */
  bytesChanged: number;
  zeroBytes: number;
  durationMs: number;
}

/** The VM as a cycle sees it: running (QMP) or stopped (its image chains). */
export type CycleSource =
  | { kind: 'live'; qmp: QmpClient; nodes: string[] }
  | { kind: 'offline'; disks: { id: string; layers: DaemonLayer[] }[] };

/**
 * One replication cycle, source side: freeze a point in time, ask the recovery site for a
 * staging layer, copy what changed through NBD (TLS between sites), and only then ask it
 * to commit the point. Any failure aborts both sides: the source keeps its old bitmap (so
 * the next cycle still sees every change) and the recovery site discards staging (so its
 * newest point is untouched).
 */
export async function runReplicationCycle(opts: {
  source: CycleSource;
  workDir: string;
  previousGeneration: number | null;
  remote: RemoteReplica;
  tls: CycleTls;
  /** Bytes per second on the link; undefined: unlimited. */
  bandwidthBps?: number;
}): Promise<CycleResult> {
  const started = Date.now();
  await mkdir(opts.workDir, { recursive: true });
  const point: FleecingPoint | OfflineFleecingPoint = opts.source.kind === 'live'
    ? await createFleecingPoint({ qmp: opts.source.qmp, nodes: opts.source.nodes, workDir: opts.workDir, nbdSocket: join(opts.workDir, 'nbd.sock'), previousGeneration: opts.previousGeneration })
    : await createOfflineFleecingPoint({ disks: opts.source.disks, runDir: opts.workDir, previousGeneration: opts.previousGeneration });
  let remoteOpen = false;
  try {
    const target = await opts.remote.beginCycle();
    remoteOpen = true;
    const totals: CopyCounters = { bytesRead: 0, bytesWritten: 0, zeroBytes: 0, requests: 0 };
    let changed = 0;
    for (const [i, disk] of point.disks.entries()) {
      const counters = await copyDisk({
        socketPath: point.nbdSocket, exportName: disk.exportName, metaContext: disk.metaContext,
        resync: disk.mode === 'resync', host: target.host, port: target.port, targetExport: target.exports[i]!, tls: opts.tls,
        ...(opts.bandwidthBps ? { bandwidthBps: opts.bandwidthBps } : {}),
      });
      totals.bytesWritten += counters.bytesWritten;
      totals.zeroBytes += counters.zeroBytes;
      changed += counters.changed;
    }
    const committed = await opts.remote.commitCycle(target.cycleId, { time: point.at, consistency: point.consistency });
    remoteOpen = false;
    if (point.kind === 'live' && opts.source.kind === 'live') await completeFleecingPoint(opts.source.qmp, point);
    else if (point.kind === 'offline') await completeOfflineFleecingPoint(point);
    const mode = point.needsResync ? 'resync' : point.full ? 'full' : 'incremental';
    return { point: committed, generation: point.generation, mode, bytesSent: totals.bytesWritten, bytesChanged: changed, zeroBytes: totals.zeroBytes, durationMs: Date.now() - started };
  } catch (e) {
    if (remoteOpen) await opts.remote.abortCycle().catch(() => undefined);
    if (point.kind === 'live' && opts.source.kind === 'live') await abortFleecingPoint(opts.source.qmp, point).catch(() => undefined);
    else if (point.kind === 'offline') await abortOfflineFleecingPoint(point).catch(() => undefined);
    throw e;
  }
}

async function copyDisk(o: {
  socketPath: string; exportName: string; metaContext: string | null; resync: boolean;
  host: string; port: number; targetExport: string; tls: CycleTls; bandwidthBps?: number;
}): Promise<CopyCounters & { changed: number }> {
  const context = o.metaContext ?? 'base:allocation';
  const src = await NbdClient.connect({ socketPath: o.socketPath }, { exportName: o.exportName, metaContexts: [context] });
  try {
    const dst = await NbdClient.connect({ host: o.host, port: o.port }, {
      exportName: o.targetExport,
      tls: { ca: o.tls.peerCaPem, cert: o.tls.clientCertPem, key: o.tls.clientKeyPem },
      // A silent link (cut cable, dead peer) must fail the cycle soon, not after minutes:
      // requests are at most a few MiB, which take seconds even on a slow link.
      timeoutMs: 10_000,
      requestTimeoutMs: 20_000,
    });
    try {
      const extents = o.metaContext ? await dirtyExtents(src, o.metaContext) : await allocatedExtents(src);
      const changed = sum(extents);
      if (o.resync) return { ...(await resyncExtents(src, dst, extents)), changed };
      // A full first copy lands on an empty replica: zero areas need no write at all.
      const target = o.bandwidthBps ? throttled(dst, o.bandwidthBps) : dst;
      // Throttled copies go in small chunks so the rate holds over short spans too.
      const counters = await copyExtents({ source: src, target, extents, targetIsZero: !o.metaContext, ...(o.bandwidthBps ? { chunkSize: 256 * 1024, concurrency: 1 } : {}) });
      return { ...counters, changed };
    } finally {
      await dst.disconnect().catch(() => undefined);
    }
  } finally {
    await src.disconnect().catch(() => undefined);
  }
}

/**
 * A lost bitmap: nothing says what changed, so compare chunk by chunk and write only the
 * chunks that differ. The replica's chunks are read through the staging export.
 */
async function resyncExtents(src: NbdClient, dst: NbdClient, extents: ByteRange[]): Promise<CopyCounters> {
  const chunk = Math.min(1024 * 1024, src.maxRequestLength, dst.maxRequestLength);
  const out: CopyCounters = { bytesRead: 0, bytesWritten: 0, zeroBytes: 0, requests: 0 };
  for (const e of extents) {
    for (let off = e.offset; off < e.offset + e.length; off += chunk) {
      const len = Math.min(chunk, e.offset + e.length - off);
      const [a, b] = await Promise.all([src.read(off, len), dst.read(off, len)]);
      out.bytesRead += len * 2;
      out.requests += 2;
      if (!a.equals(b)) {
        await dst.write(off, a);
        out.bytesWritten += len;
        out.requests += 1;
      }
    }
  }
  await dst.flush();
  return out;
}

/** A target whose writes wait for a token bucket refilled at `bps` bytes per second. */
function throttled(dst: NbdClient, bps: number): CopyTarget {
  let available = 0;
  let last = Date.now();
  const take = async (n: number): Promise<void> => {
    for (;;) {
      const now = Date.now();
      available = Math.min(bps, available + ((now - last) * bps) / 1000);
      last = now;
      if (available >= n || (available >= bps && n > bps)) {
        available -= n;
        return;
      }
      await new Promise((r) => setTimeout(r, Math.max(5, ((n - available) * 1000) / bps)));
    }
  };
  return {
    get transmissionFlags() { return dst.transmissionFlags; },
    get blockSizes() { return dst.blockSizes; },
    get maxRequestLength() { return dst.maxRequestLength; },
    write: async (offset, data, options) => {
      await take(data.length);
      return dst.write(offset, data, options);
    },
    writeZeroes: (offset, length, options) => dst.writeZeroes(offset, length, options),
    flush: (options) => dst.flush(options),
  };
}

function sum(extents: readonly ByteRange[]): number {
  return extents.reduce((n, e) => n + e.length, 0);
}
