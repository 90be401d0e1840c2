import { NbdClient } from '../nbd/nbd-client.js';
import { isNbdError } from '../nbd/nbd-error.js';
import { allocatedExtents, copyExtents, type ByteRange, type CopyCounters } from '../nbd/extent-copy.js';
import { formatNbdUri, parseNbdUri, type NbdUri } from '../nbd/nbd-uri.js';
import type { NbdTlsMaterial } from '../nbd/nbd-tls-creds.js';
import { withTargetDiskExport } from './target-disk-export.js';
import { cachedReader } from '../inspect/image-source.js';
import { inspectDisk, type InspectionReport } from '../inspect/inspector.js';
import { MamoriError } from '../core/mamori-error.js';
import type { DiskRecord } from '../disks/disk-record.js';

/**
 * A disk served by any NBD server (qemu-nbd, nbdkit exposing VMware, Hyper-V or cloud disks,
 * qemu-storage-daemon), read as plain disk bytes: what the server exports is the disk, raw.
 * No QEMU format layer is put on top, so a server that serves a qcow2 header gets its bytes
 * copied as they are, never its backing file opened.
 */
export interface NbdSource {
  uri: NbdUri;
  tls?: NbdTlsMaterial;
}

/** The URI parsed strictly and the TLS material checked against it: nbds needs it, nbd refuses it. */
export function nbdSource(text: unknown, tls?: NbdTlsMaterial): NbdSource {
  const uri = parseNbdUri(text);
  if (uri.tls && tls === undefined) {
    throw new MamoriError(
      'INVALID_INPUT',
      `${formatNbdUri(uri)} asks for TLS: give the CA (and a client certificate if the server verifies clients) with --tls-creds DIR`,
    );
  }
  if (!uri.tls && tls !== undefined) {
    // Never "TLS if material is there": the URI alone says whether the link is encrypted.
    throw new MamoriError(
      'INVALID_INPUT',
      `${formatNbdUri(uri)} is plain NBD but TLS material was given: write nbds:// (or nbds+unix://) to use TLS`,
    );
  }
  if (tls !== undefined && (typeof tls.ca !== 'string' || (tls.cert === undefined) !== (tls.key === undefined))) {
    throw new MamoriError('INVALID_INPUT', 'tls needs ca, and cert with key (both or neither)');
  }
  return { uri, ...(tls !== undefined ? { tls } : {}) };
}

/**
 * Connects read-side. base:allocation is asked for (to copy only what holds data) when
 * `allocation`; a server without it is connected to again without, and read whole.
 */
export async function connectNbdSource(
  src: NbdSource,
  opts: { allocation?: boolean } = {},
): Promise<{ client: NbdClient; allocation: boolean }> {
  const endpoint =
    src.uri.transport === 'unix' ? { socketPath: src.uri.socket } : { host: src.uri.host, port: src.uri.port };
  const base = {
    exportName: src.uri.exportName,
    ...(src.tls ? { tls: { ca: src.tls.ca, ...(src.tls.cert ? { cert: src.tls.cert, key: src.tls.key! } : {}) } } : {}),
  };
  if (opts.allocation) {
    try {
      return {
        client: await NbdClient.connect(endpoint, { ...base, metaContexts: ['base:allocation'] }),
        allocation: true,
      };
    } catch (e) {
      if (!isNbdError(e, 'NBD_NEGOTIATION_FAILED') && !isNbdError(e, 'NBD_UNSUPPORTED')) throw e;
    }
  }
  return { client: await NbdClient.connect(endpoint, base), allocation: false };
}

/** Inspects the served disk (partition table, filesystems, firmware, guest OS). */
export async function inspectNbdSource(src: NbdSource): Promise<InspectionReport> {
  const { client } = await connectNbdSource(src);
  try {
    assertWholeSectors(src, client.size);
    return await inspectDisk(cachedReader(client));
  } finally {
    await client.disconnect().catch(() => undefined);
  }
}

/** The served disk's size in bytes (what the target image is made with). */
export async function nbdSourceSize(src: NbdSource): Promise<number> {
  const { client } = await connectNbdSource(src);
  try {
    assertWholeSectors(src, client.size);
    return client.size;
  } finally {
    await client.disconnect().catch(() => undefined);
  }
}

/**
 * Copies the served disk into a new, empty pool image: the image is written through QEMU's
 * block layer (a qemu-storage-daemon exporting it on a private unix socket), only the
 * ranges the server says hold data are read, and chunks that read as zeros are skipped
 * (the fresh image reads as zeros already).
 */
export async function copyNbdSource(
  src: NbdSource,
  disk: DiskRecord,
  o: { runDir: string; onProgress?: (fraction: number) => void },
): Promise<CopyCounters & { allocatedBytes: number }> {
  return withTargetDiskExport(disk, o.runDir, async (target) => {
    let source: NbdClient | null = null;
    try {
      const opened = await connectNbdSource(src, { allocation: true });
      source = opened.client;
      assertWholeSectors(src, source.size);
      if (source.size > target.size) {
        throw new MamoriError(
          'INVALID_INPUT',
          `${formatNbdUri(src.uri)} grew to ${source.size} bytes after it was inspected (the image holds ${target.size}); convert again`,
        );
      }
      const extents: ByteRange[] = opened.allocation
        ? await allocatedExtents(source)
        : [{ offset: 0, length: source.size }];
      const allocatedBytes = extents.reduce((n, r) => n + r.length, 0);
      const counters = await copyExtents({
        source,
        target,
        extents,
        targetIsZero: true,
        concurrency: 4,
        onProgress: (p) => o.onProgress?.(p.bytesDone / Math.max(p.bytesTotal, 1)),
      });
      return { ...counters, allocatedBytes };
    } finally {
      await source?.disconnect().catch(() => undefined);
    }
  });
}

/** A disk is whole 512-byte sectors; an export that is not is refused rather than rounded. */
function assertWholeSectors(src: NbdSource, size: number): void {
  if (size <= 0 || size % 512 !== 0) {
    throw new MamoriError(
      'INVALID_INPUT',
      `${formatNbdUri(src.uri)} serves ${size} bytes, which is not a whole number of 512-byte sectors: it is not a disk mamori can convert`,
    );
  }
}
