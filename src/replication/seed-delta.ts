import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { NbdClient } from '../nbd/nbd-client.js';
import { dirtyExtents, type ByteRange } from '../nbd/extent-copy.js';
import { StorageDaemon } from '../qemu/storage-daemon.js';
import type { DaemonLayer } from '../qemu/daemon-chain.js';
import { bitmapName, judgeBitmaps, readImageBitmaps } from './dirty-bitmaps.js';

/**
 * Reprotect by delta. After a failover, the old site's disks become the seed of a reverse
 * replica, and the recovered VM replicates onto them. What must cross is:
 *  - what the recovered VM wrote since the point it started from (its own `mamori-0` bitmap,
 *    added to its overlay when it was made: see VmRecovery), and
 *  - what the old site wrote after its last point (a disaster: the VM ran on for a while
 *    after the last cycle), which the seed holds and must lose. Its replication bitmap
 *    `mamori-<g>` covers exactly that, if its QEMU closed the image cleanly.
 * This file is the old site's half: which blocks of each seed disk may differ from the
 * point its last cycle committed, recorded when the seed is made (seed-delta.json in the
 * replica's folder) and served to the peer. A side whose bitmap is lost is `known: false`:
 * the peer then compares checksums for that side's blocks.
 */
export const SEED_DELTA_FILE = 'seed-delta.json';

export type SeedDiskDelta =
  /** The seed is the point of `since` plus writes inside `extents`. */
  | { known: true; since: string; extents: ByteRange[] }
  /** Nothing says what the seed wrote after its last point: compare checksums. */
  | { known: false; reason: string };

export interface SeedDelta {
  disks: SeedDiskDelta[];
}

/** How a first reverse cycle treats the seed's side of one disk. */
export type SeedSide = { kind: 'extents'; extents: ByteRange[] } | { kind: 'checksums'; reason: string };

/**
 * The seed side of each disk for the VM's first reverse cycle (pure).
 * - `startedFrom` null: the VM did not start from a replica point (a live migration onto the
 *   replica: the seed is the disk as it was at the switchover, where `mamori-0` began), so
 *   there is nothing more to send than the VM's own bitmap;
 * - the seed's writes are known since a point no newer than the one the VM started from:
 *   the seed differs from that point only where it wrote since (its bitmap covers every
 *   write after its own last point, which the newer point already held or it covers too);
 * - otherwise (bitmap lost, no delta, or the VM started from a point older than the seed's
 *   last one, whose later points the bitmap does not cover): checksums for that side.
 */
export function seedSides(delta: SeedDelta | null, startedFrom: string | null, disks: number): SeedSide[] | null {
  if (startedFrom === null) return null;
  return Array.from({ length: disks }, (_, i): SeedSide => {
    const d = delta?.disks[i];
    if (d === undefined) return { kind: 'checksums', reason: 'the old site recorded no delta for this disk' };
    if (!d.known) return { kind: 'checksums', reason: d.reason };
    if (Date.parse(d.since) > Date.parse(startedFrom)) {
      return {
        kind: 'checksums',
        reason: `the VM started from a point older than the old site's last one (${d.since})`,
      };
    }
    return { kind: 'extents', extents: d.extents };
  });
}

/**
 * One seed disk's delta, read offline: the top layer's `mamori-<generation>` judged as a
 * cycle would (present, consistent, recording), then its dirty extents listed through a
 * read-only storage daemon export. Raw images and lost bitmaps give `known: false`.
 */
export async function seedDiskDelta(
  layers: DaemonLayer[],
  replication: { generation: number | null; lastPointAt: string | null } | null,
): Promise<SeedDiskDelta> {
  if (replication === null || replication.generation === null || replication.lastPointAt === null) {
    return { known: false, reason: 'the VM had no committed replication point here' };
  }
  const top = layers.at(-1);
  if (top === undefined || top.format !== 'qcow2')
    return { known: false, reason: 'a raw image keeps no bitmap across a stop' };
  const verdict = judgeBitmaps(await readImageBitmaps(top.file), replication.generation);
  if (verdict.mode !== 'incremental')
    return {
      known: false,
      reason: `the bitmap of point generation ${replication.generation} is ${verdict.reason ?? 'unusable'}`,
    };
  const name = bitmapName(replication.generation);
  return { known: true, since: replication.lastPointAt, extents: await imageDirtyExtents(layers, name) };
}

/** The dirty extents of a bitmap of a closed image chain (as `qemu-nbd -r -B NAME` would export it). */
export async function imageDirtyExtents(layers: DaemonLayer[], bitmap: string): Promise<ByteRange[]> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-seed-delta-'));
  const socket = join(dir, 'nbd.sock');
  try {
    const daemon = await StorageDaemon.start({
      qmpSocket: join(dir, 'qmp.sock'),
      pidFile: join(dir, 'sd.pid'),
      chains: [{ id: 'seed', layers, readOnly: true }],
      nbd: { listen: { type: 'unix', path: socket } },
      exports: [{ id: 'seed', node: 'seed', bitmaps: [bitmap] }],
    });
    try {
      const context = `qemu:dirty-bitmap:${bitmap}`;
      const client = await NbdClient.connect({ socketPath: socket }, { exportName: 'seed', metaContexts: [context] });
      try {
        return await dirtyExtents(client, context);
      } finally {
        await client.disconnect().catch(() => undefined);
      }
    } finally {
      await daemon.stop().catch(() => daemon.kill());
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function writeSeedDelta(replicaDir: string, delta: SeedDelta): Promise<void> {
  const tmp = join(replicaDir, `${SEED_DELTA_FILE}.tmp`);
  await writeFile(tmp, JSON.stringify(delta));
  await rename(tmp, join(replicaDir, SEED_DELTA_FILE));
}

/** Null when none was recorded (a replica not made from a seed, or one cut before its delta was written). */
export async function readSeedDelta(replicaDir: string): Promise<SeedDelta | null> {
  const text = await readFile(join(replicaDir, SEED_DELTA_FILE), 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw e;
  });
  return text === null ? null : (JSON.parse(text) as SeedDelta);
}
