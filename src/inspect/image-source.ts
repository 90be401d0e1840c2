import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NbdClient } from '../nbd/nbd-client.js';
import {
  checkImage,
  checkUntrustedImage,
  imageInfo,
  tarMemberFilename,
  untrustedImageName,
} from '../qemu/qemu-img-read.js';
import { vetUntrustedImage } from '../images/untrusted-image.js';
import { runProcess } from '../core/run-process.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import type { ByteReader } from './byte-reader.js';

/**
 * A source to inspect (a block device, a raw image, or any image QEMU reads: qcow2, VMDK in
 * all its forms, VHD, VHDX), seen as plain disk bytes through QEMU's block layer: qemu-nbd
 * exports it read-only on a private unix socket and our NBD client reads it. Container
 * formats are never parsed here, so a damaged one is refused with QEMU's own reason.
 */
export interface OpenedSource {
  reader: ByteReader;
  /** As qemu-img names it (raw, qcow2, vmdk, vpc, vhdx, ...); 'raw' for block devices. */
  format: string;
  /** 'device' for a block device, else 'image'. */
  kind: 'device' | 'image';
  close(): Promise<void>;
}

/** Reads are rounded out to chunks of this size and the chunks kept: metadata reads are small and repeat. */
const CHUNK = 64 * 1024;
const CACHED_CHUNKS = 512;

/**
 * `member`: the image is that byte range of `file` (a VMDK inside an OVA), read in place.
 * Sources are untrusted unless `trusted` says they are the site's own images (a pool's layers,
 * whose backing chains QEMU must follow): an untrusted one is vetted by mamori first
 * (src/images/untrusted-image.ts) and handed to QEMU with its format pinned and no backing.
 */
export async function openSource(
  file: string,
  member?: { offset: number; size: number },
  opts: { trusted?: boolean } = {},
): Promise<OpenedSource> {
  const st = await stat(file).catch((e: unknown) => {
    throw new MamoriError('IMAGE_NOT_FOUND', `no disk or image at ${file}: check the path`, {
      cause: e,
      details: { source: file },
    });
  });
  const kind = st.isBlockDevice() ? 'device' : 'image';
  if (!st.isBlockDevice() && !st.isFile())
    throw new MamoriError('INVALID_INPUT', `${file} is neither a block device nor an image file`);
  let path: string;
  let format: string;
  if (opts.trusted) {
    path = member ? tarMemberFilename(file, member) : file;
    // qemu-img names the format and refuses a damaged container (a truncated VMDK) with its reason.
    format = kind === 'device' ? 'raw' : (await imageInfo(path)).format;
    // A container damaged or cut short (a truncated VMDK) is refused here with QEMU's reason, not read half.
    if (kind === 'image') await checkImage(path, format);
  } else {
    // A block device is read as raw bytes (what a physical disk is); an image file is vetted.
    const image =
      kind === 'device'
        ? { file, format: 'raw', blockDevice: true, ...(member ? { member } : {}) }
        : await vetUntrustedImage({ file, ...(member ? { member } : {}) });
    path = untrustedImageName(image);
    format = image.format;
    if (kind === 'image') await checkUntrustedImage(image);
  }
  const dir = await mkdtemp(join(tmpdir(), 'mamori-inspect-'));
  const socket = join(dir, 'nbd.sock');
  const pidFile = join(dir, 'qemu-nbd.pid');
  let client: NbdClient | null = null;
  try {
    // --fork returns once the socket listens; --persistent is off, so qemu-nbd exits when we disconnect.
    await runProcess(
      'qemu-nbd',
      [
        '--read-only',
        '--fork',
        '--shared=1',
        `--socket=${socket}`,
        `--pid-file=${pidFile}`,
        `--format=${format}`,
        path,
      ],
      { timeoutMs: 30_000 },
    );
    client = await NbdClient.connect({ socketPath: socket }, { exportName: '' });
  } catch (e) {
    await stopQemuNbd(pidFile);
    await rm(dir, { recursive: true, force: true });
    if (isMamoriError(e) && e.code === 'PROCESS_FAILED') {
      throw new MamoriError('IMAGE_UNREADABLE', `QEMU cannot read ${file} as ${format}: ${e.message}`, {
        cause: e,
        details: { source: file, format },
      });
    }
    throw e;
  }
  const nbd = client;
  const reader = cachedReader(nbd);
  return {
    reader,
    format,
    kind,
    async close() {
      await nbd.disconnect().catch(() => undefined);
      await stopQemuNbd(pidFile);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function stopQemuNbd(pidFile: string): Promise<void> {
  const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
  if (!(pid > 0)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    // already gone (it exits by itself when the last client disconnects)
  }
}

/** Disk bytes through an NBD connection, read in cached 64 KiB chunks (inspection reads small and repeats). */
export function cachedReader(nbd: Pick<NbdClient, 'size' | 'read'>): ByteReader {
  const size = nbd.size;
  const chunks = new Map<number, Promise<Buffer>>();
  const chunk = (index: number): Promise<Buffer> => {
    let p = chunks.get(index);
    if (p) {
      // Most recently used last: Map keeps insertion order, so re-insert.
      chunks.delete(index);
      chunks.set(index, p);
      return p;
    }
    const offset = index * CHUNK;
    p = nbd.read(offset, Math.min(CHUNK, size - offset));
    p.catch(() => chunks.delete(index));
    chunks.set(index, p);
    if (chunks.size > CACHED_CHUNKS) chunks.delete(chunks.keys().next().value!);
    return p;
  };
  return {
    size,
    async read(offset: number, length: number): Promise<Buffer> {
      if (offset < 0 || length < 0 || offset + length > size) {
        throw new MamoriError(
          'FILESYSTEM_UNREADABLE',
          `a read at byte ${offset} (${length} bytes) falls outside the ${size}-byte disk: a partition or filesystem points past its end (a truncated image?)`,
        );
      }
      if (length === 0) return Buffer.alloc(0);
      // Large reads (whole files) go straight through; small ones come from chunks.
      if (length > 4 * CHUNK) return nbd.read(offset, length);
      const first = Math.floor(offset / CHUNK);
      const last = Math.floor((offset + length - 1) / CHUNK);
      const parts = await Promise.all(Array.from({ length: last - first + 1 }, (_, i) => chunk(first + i)));
      const joined = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      const from = offset - first * CHUNK;
      return joined.subarray(from, from + length);
    },
  };
}
