import { join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';
import { replaceFileDurably } from '../core/durable-sync.js';

/**
 * manifest.json of a replica chain: which files are its base, seed and points, in what order.
 * Written to a temp file, fsynced and renamed (then the folder fsynced): that rename is the
 * commit of every chain operation (ReplicaChain). Read back strictly: a manifest that does not
 * parse is IMAGE_CORRUPT, never guessed at.
 */

import type { PointConsistency } from '../store/records/replica-record.js';
export type { PointConsistency } from '../store/records/replica-record.js';

export interface ChainLayer {
  file: string;
  /** raw only as the bottom layer (a seed from a raw disk). */
  format: 'qcow2' | 'raw';
}

export interface ManifestPoint {
  id: string;
  seq: number;
  file: string;
  time: string;
  consistency: PointConsistency;
  committedAt: string;
}

export interface ReplicaManifest {
  format: 'mamori-replica-chain';
  version: 1;
  virtualSize: number;
  /**
   * Reprotect: the disk the VM had here before it failed over (its layers, bottom first,
   * absolute paths), under the base. The first cycle then compares checksums against it
   * and sends only what differs, instead of the whole disk.
   */
  seed?: ChainLayer[];
  /**
   * Seed layers the base no longer reads (absorbSeed copied what they held into it): their
   * owner deletes them, then calls seedReleased(). Written in the same manifest write that
   * drops `seed`, so a crash in between leaves the list to finish from.
   */
  releasedSeed?: ChainLayer[];
  base: string;
  nextSeq: number;
  points: ManifestPoint[];
}

export const MANIFEST = 'manifest.json';
export const POINT_RE = /^p\d+\.qcow2$/;

export function parseManifest(text: string, dir: string): ReplicaManifest {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new MamoriError('IMAGE_CORRUPT', `replica manifest in ${dir} is not JSON`, { details: { dir }, cause: e });
  }
  const o = m as Partial<ReplicaManifest> | null;
  const ok =
    o !== null &&
    typeof o === 'object' &&
    o.format === 'mamori-replica-chain' &&
    o.version === 1 &&
    Number.isSafeInteger(o.virtualSize) &&
    typeof o.base === 'string' &&
    (o.seed === undefined ||
      (Array.isArray(o.seed) &&
        o.seed.every(
          (l, i) =>
            typeof l?.file === 'string' &&
            l.file.startsWith('/') &&
            (l.format === 'qcow2' || (l.format === 'raw' && i === 0)),
        ))) &&
    (o.releasedSeed === undefined ||
      (Array.isArray(o.releasedSeed) &&
        o.releasedSeed.every(
          (l) => typeof l?.file === 'string' && l.file.startsWith('/') && (l.format === 'qcow2' || l.format === 'raw'),
        ))) &&
    Number.isSafeInteger(o.nextSeq) &&
    Array.isArray(o.points) &&
    o.points.every(
      (p) =>
        typeof p?.id === 'string' &&
        typeof p.file === 'string' &&
        POINT_RE.test(p.file) &&
        Number.isSafeInteger(p.seq) &&
        p.seq < o.nextSeq! &&
        typeof p.time === 'string' &&
        (p.consistency === 'crash' || p.consistency === 'application'),
    );
  if (!ok)
    throw new MamoriError('IMAGE_CORRUPT', `replica manifest in ${dir} is not a mamori replica chain (version 1)`, {
      details: { dir },
    });
  return o as ReplicaManifest;
}

export async function writeManifest(dir: string, manifest: ReplicaManifest): Promise<void> {
  // 0o666 as before (the process umask applies): the chain's files keep the modes they had.
  await replaceFileDurably(join(dir, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`, 0o666);
}
