import { mkdir } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { CompressedStream, type WireCompressionMode, type WireCounters } from '../sites/compressed-stream.js';
import { join } from 'node:path';
import { NbdClient } from '../nbd/nbd-client.js';
import {
  allocatedExtents,
  copyExtents,
  dirtyExtents,
  type ByteRange,
  type CopyCounters,
  type CopyTarget,
} from '../nbd/extent-copy.js';
import {
  createFleecingPoint,
  settleFleecingPoint,
  type FleecingPoint,
  type GuestFreezeHooks,
} from './fleecing-point.js';
import { createOfflineFleecingPoint, type OfflineFleecingPoint } from './offline-fleecing-point.js';
import type { QmpClient } from '../qemu/qmp-client.js';
import type { DaemonLayer } from '../qemu/daemon-chain.js';
import type { CycleTarget } from './replica-cycle-server.js';
import type { ReplicaPointView } from './replica-service.js';
import type { WriteThrottle } from './link-budget.js';
import {
  chunkDigests,
  chunksOf,
  coveredBy,
  DIGEST_BYTES,
  differingChunks,
  MAX_CHECKSUM_SPAN,
  RESYNC_CHUNK,
} from './block-checksums.js';
import type { SeedSide } from './seed-delta.js';

/** What the source needs of the recovery site for one cycle (the peer's replica API). */
export interface RemoteReplica {
  beginCycle(): Promise<CycleTarget>;
  commitCycle(cycleId: string, meta: { time: string; consistency: 'crash' | 'application' }): Promise<ReplicaPointView>;
  abortCycle(): Promise<void>;
  /** Digests of a span of a disk's newest point, hashed at the recovery site (block-checksums.ts). */
  checksums(cycleId: string, disk: number, range: ByteRange, chunkSize: number): Promise<Buffer>;
  /** An NBD stream into a disk of the open cycle, over the peer API's TLS (api/cycle-streams.ts). */
  openStream(cycleId: string, disk: number): Promise<Socket>;
}

export interface CycleResult {
  point: ReplicaPointView;
  generation: number;
  mode: 'full' | 'incremental' | 'resync';
  /** Bytes of data sent to the recovery site (NBD WRITE payloads). */
  bytesSent: number;
  /** Bytes the cycle's streams put on the link (NBD requests, framed, lz4 where it paid), TLS aside. */
  wireBytes: number;
  /** Bytes the source marked as needing a copy (dirty or allocated extents; with a seed, its extents too). */
  bytesChanged: number;
  /** Bytes the source read from its disks (copies and checksums). */
  bytesRead: number;
  zeroBytes: number;
  durationMs: number;
}

/** The VM as a cycle sees it: running (QMP) or stopped (its image chains). */
export type CycleSource =
  | { kind: 'live'; qmp: QmpClient; nodes: string[]; guest?: GuestFreezeHooks }
  | { kind: 'offline'; disks: { id: string; layers: DaemonLayer[] }[] };

/** The steps of a cycle, in order, as its job journal records them. */
export const CYCLE_STEPS = ['fleece', 'begin', 'copy', 'commit', 'complete'] as const;
export type CycleStep = (typeof CYCLE_STEPS)[number];

/**
 * Where a cycle writes down how far it got, so a server killed at any instant can be
 * repaired: each step is journalled, the fleecing point is recorded as soon as it exists,
 * and the new generation is recorded the moment the recovery site has committed.
 */
export interface CycleJournal {
  step<T>(name: CycleStep, fn: () => Promise<T>): Promise<T>;
  pointMade(point: FleecingPoint | OfflineFleecingPoint): Promise<void>;
  /** Must persist `result.generation` before it returns: the old bitmap is dropped next. */
  committed(result: CycleResult): Promise<void>;
}

const UNJOURNALLED: CycleJournal = {
  step: (_name, fn) => fn(),
  pointMade: async () => undefined,
  committed: async () => undefined,
};

/**
 * One replication cycle, source side: freeze a point in time, ask the recovery site for a
 * staging layer, copy what changed through NBD (TLS between sites), and only then ask it
 * to commit the point. A failure before the commit aborts both sides: the source keeps its
 * old bitmap (so the next cycle still sees every change) and the recovery site discards
 * staging (so its newest point is untouched). After the commit the source always moves on
 * to the new bitmap: the generation on record and the bitmap in QEMU must agree, or the
 * next cycle would have to resynchronise.
 */
export async function runReplicationCycle(opts: {
  source: CycleSource;
  workDir: string;
  previousGeneration: number | null;
  remote: RemoteReplica;
  /** Awaited before each write to the recovery site (the link's fair share, the VM's cap); undefined: unlimited. */
  throttle?: WriteThrottle;
  /** How the streams compress (compressed-stream.ts); default auto. */
  compression?: WireCompressionMode;
  journal?: CycleJournal;
  /**
   * The first cycle of a reprotect onto the old site's disks, per disk (seed-delta.ts): the
   * blocks those disks wrote after the point the VM started from, sent besides the VM's own
   * bitmap; or checksums for them when their bitmap was lost. Null: the bitmap alone.
   */
  seed?: SeedSide[] | null;
}): Promise<CycleResult> {
  const started = Date.now();
  const journal = opts.journal ?? UNJOURNALLED;
  await mkdir(opts.workDir, { recursive: true });
  const source = opts.source;
  const point: FleecingPoint | OfflineFleecingPoint = await journal.step<FleecingPoint | OfflineFleecingPoint>(
    'fleece',
    () =>
      source.kind === 'live'
        ? createFleecingPoint({
            qmp: source.qmp,
            nodes: source.nodes,
            workDir: opts.workDir,
            nbdSocket: join(opts.workDir, 'nbd.sock'),
            previousGeneration: opts.previousGeneration,
            ...(source.guest ? { guest: source.guest } : {}),
          })
        : createOfflineFleecingPoint({
            disks: source.disks,
            runDir: opts.workDir,
            previousGeneration: opts.previousGeneration,
          }),
  );
  const qmp = source.kind === 'live' ? source.qmp : null;
  let remoteOpen = false;
  let committed = false;
  try {
    await journal.pointMade(point);
    const target = await journal.step('begin', () => opts.remote.beginCycle());
    remoteOpen = true;
    const { bytesSent, zeroBytes, changed, bytesRead, compared, wireBytes } = await journal.step('copy', async () => {
      const totals = { bytesSent: 0, zeroBytes: 0, changed: 0, bytesRead: 0, compared: false, wireBytes: 0 };
      for (const [i, disk] of point.disks.entries()) {
        const seed = disk.metaContext !== null ? (opts.seed?.[i] ?? null) : null;
        const counters = await copyDisk({
          socketPath: point.nbdSocket,
          exportName: disk.exportName,
          metaContext: disk.metaContext,
          seed,
          checksums: (range, chunk) => opts.remote.checksums(target.cycleId, i, range, chunk),
          resync: disk.mode === 'resync',
          openTarget: () => opts.remote.openStream(target.cycleId, i),
          onWire: (w) => (totals.wireBytes += w.wireBytesOut),
          compression: opts.compression ?? 'auto',
          targetExport: target.exports[i]!,
          ...(opts.throttle ? { throttle: opts.throttle } : {}),
        });
        totals.bytesSent += counters.bytesWritten;
        totals.zeroBytes += counters.zeroBytes;
        totals.changed += counters.changed;
        totals.bytesRead += counters.bytesRead;
        totals.compared ||= disk.mode === 'resync' || seed?.kind === 'checksums';
      }
      return totals;
    });
    const result = await journal.step('commit', async () => {
      const pointView = await opts.remote.commitCycle(target.cycleId, {
        time: point.at,
        consistency: point.consistency,
      });
      remoteOpen = false;
      // A reprotect whose old side lost its bitmap compared checksums too: a resync, if a partial one.
      const mode: CycleResult['mode'] = point.needsResync || compared ? 'resync' : point.full ? 'full' : 'incremental';
      const r: CycleResult = {
        point: pointView,
        generation: point.generation,
        mode,
        bytesSent,
        wireBytes,
        bytesChanged: changed,
        bytesRead,
        zeroBytes,
        durationMs: Date.now() - started,
      };
      await journal.committed(r);
      committed = true;
      return r;
    });
    await journal.step('complete', () => settleFleecingPoint(point, qmp, 'complete'));
    return result;
  } catch (e) {
    if (remoteOpen) await opts.remote.abortCycle().catch(() => undefined);
    await settleFleecingPoint(point, qmp, committed ? 'complete' : 'abort').catch(() => undefined);
    throw e;
  }
}

async function copyDisk(o: {
  socketPath: string;
  exportName: string;
  metaContext: string | null;
  /** The disk's bitmap is lost: compare checksums over the whole disk. */
  resync: boolean;
  /** The replica's digests of a span (resync, or a seed whose bitmap is lost). */
  checksums: (range: ByteRange, chunkSize: number) => Promise<Buffer>;
  seed: SeedSide | null;
  openTarget: () => Promise<Socket>;
  /** Told the stream's counters when it closes. */
  onWire: (counters: WireCounters) => void;
  compression: WireCompressionMode;
  targetExport: string;
  throttle?: WriteThrottle;
}): Promise<CopyCounters & { changed: number }> {
  // Checksums for the seed's side hash zero areas without reading them: that needs base:allocation as well.
  const contexts =
    o.metaContext === null
      ? ['base:allocation']
      : o.seed?.kind === 'checksums'
        ? [o.metaContext, 'base:allocation']
        : [o.metaContext];
  const src = await NbdClient.connect(
    { socketPath: o.socketPath },
    { exportName: o.exportName, metaContexts: contexts },
  );
  try {
    // Framed both ways, lz4 when the link is slower than the compressor (compressed-stream.ts).
    const wire = new CompressedStream(await o.openTarget(), { mode: o.compression });
    const dst = await NbdClient.connect(
      { stream: wire, label: `the recovery site's export ${o.targetExport}` },
      {
        exportName: o.targetExport,
        // A silent link (cut cable, dead peer) must fail the cycle soon, not after minutes:
        // requests are at most a few MiB, which take seconds even on a slow link.
        timeoutMs: 10_000,
        requestTimeoutMs: 20_000,
      },
    );
    try {
      const target = o.throttle ? throttled(dst, o.throttle) : dst;
      const small = o.throttle ? THROTTLED_COPY : FULL_SPEED_COPY;
      if (o.resync) return await resyncByChecksums(src, target, o.checksums, o.throttle !== undefined, []);
      const own = o.metaContext ? await dirtyExtents(src, o.metaContext) : await allocatedExtents(src);
      // Reprotect: the old disks' own later writes are overwritten with this side's data too.
      const extents = o.seed?.kind === 'extents' ? union(own, o.seed.extents) : own;
      const changed = sum(extents);
      // A full first copy lands on an empty replica: zero areas need no write at all.
      // Throttled copies go in small chunks so the rate holds over short spans too, with enough
      // of them in flight to fill the link's bandwidth-delay product (THROTTLED_COPY).
      const counters = await copyExtents({ source: src, target, extents, targetIsZero: !o.metaContext, ...small });
      if (o.seed?.kind !== 'checksums') return { ...counters, changed };
      // The old side lost its bitmap: its later writes may be anywhere, so the rest of the
      // disk is compared by checksums; this side's own changes were just sent and are skipped.
      const rest = await resyncByChecksums(src, target, o.checksums, o.throttle !== undefined, own);
      return {
        bytesRead: counters.bytesRead + rest.bytesRead,
        bytesWritten: counters.bytesWritten + rest.bytesWritten,
        zeroBytes: counters.zeroBytes + rest.zeroBytes,
        requests: counters.requests + rest.requests,
        changed: rest.changed,
      };
    } finally {
      await dst.disconnect().catch(() => undefined);
      o.onWire(wire.counters);
    }
  } finally {
    await src.disconnect().catch(() => undefined);
  }
}

/**
 * A lost bitmap: nothing says what changed. Both sides hash the whole disk in chunks where
 * it lies (zero areas without reading); only digests cross the link, then only the chunks
 * that differ: data where the source has data, WRITE_ZEROES where it now reads zero (the
 * replica may hold data the source discarded). `changed` is the bytes compared.
 */
async function resyncByChecksums(
  src: NbdClient,
  dst: CopyTarget,
  replicaDigests: (range: ByteRange, chunkSize: number) => Promise<Buffer>,
  throttledCopy: boolean,
  sent: readonly ByteRange[],
): Promise<CopyCounters & { changed: number }> {
  const out = { bytesRead: 0, bytesWritten: 0, zeroBytes: 0, requests: 0, changed: src.size };
  for (let offset = 0; offset < src.size; offset += MAX_CHECKSUM_SPAN) {
    const span = { offset, length: Math.min(MAX_CHECKSUM_SPAN, src.size - offset) };
    const counter = { bytesRead: 0 };
    const [mine, theirs] = await Promise.all([
      chunkDigests(src, span, RESYNC_CHUNK, { skip: sent, counter }),
      replicaDigests(span, RESYNC_CHUNK),
    ]);
    out.bytesRead += counter.bytesRead;
    // Chunks already sent in whole are equal now: take the replica's digest for them.
    for (const [i, c] of chunksOf(span, RESYNC_CHUNK).entries()) {
      if (coveredBy(sent, c)) theirs.copy(mine, i * DIGEST_BYTES, i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
    }
    const diff = differingChunks(span, RESYNC_CHUNK, mine, theirs);
    for (const z of diff.zero) {
      await dst.writeZeroes(z.offset, z.length);
      out.zeroBytes += z.length;
      out.requests += 1;
    }
    if (diff.data.length > 0) {
      const c = await copyExtents({
        source: src,
        target: dst,
        extents: diff.data,
        targetIsZero: false,
        ...(throttledCopy ? THROTTLED_COPY : {}),
      });
      out.bytesRead += c.bytesRead;
      out.bytesWritten += c.bytesWritten;
      out.zeroBytes += c.zeroBytes;
      out.requests += c.requests;
    }
  }
  await dst.flush();
  return out;
}

/**
 * A throttled copy: 256 KiB writes, so the link's token bucket paces it finely, 8 in flight
 * (2 MiB): one at a time, each write waited a round trip for its reply, which capped a 50 ms
 * link at 5 MB/s whatever its rate. 2 MiB covers the bandwidth-delay product of 100 Mbit/s at
 * 160 ms, or 1 Gbit/s at 16 ms; the bucket, not the window, sets the rate.
 */
const THROTTLED_COPY = { chunkSize: 256 * 1024, concurrency: 8 } as const;
/** Unthrottled: 2 MiB requests, 8 in flight (qemu-img convert's own -m default). */
const FULL_SPEED_COPY = { chunkSize: 2 * 1024 * 1024, concurrency: 8 } as const;

/** A target whose writes wait for the throttle (the link budget's turn) before they go. */
function throttled(dst: NbdClient, take: WriteThrottle): CopyTarget {
  return {
    get transmissionFlags() {
      return dst.transmissionFlags;
    },
    get blockSizes() {
      return dst.blockSizes;
    },
    get maxRequestLength() {
      return dst.maxRequestLength;
    },
    write: async (offset, data, options) => {
      await take(data.length);
      return dst.write(offset, data, options);
    },
    writeZeroes: (offset, length, options) => dst.writeZeroes(offset, length, options),
    flush: (options) => dst.flush(options),
  };
}

/** Sorted, merged union of two range lists. */
function union(a: readonly ByteRange[], b: readonly ByteRange[]): ByteRange[] {
  const sorted = [...a, ...b].filter((r) => r.length > 0).sort((x, y) => x.offset - y.offset);
  const out: ByteRange[] = [];
  for (const r of sorted) {
    const last = out.at(-1);
    if (last !== undefined && r.offset <= last.offset + last.length)
      last.length = Math.max(last.length, r.offset + r.length - last.offset);
    else out.push({ offset: r.offset, length: r.length });
  }
  return out;
}

function sum(extents: readonly ByteRange[]): number {
  return extents.reduce((n, e) => n + e.length, 0);
}
