/**
 * The one door to qemu-img, its reading half: info, check, map and measure, the typed info
 * result, and the `json:` names images from outside the site are opened by. Everything that
 * writes an image (create, convert, export, commit, rebase, bitmaps) is in qemu-img-write.ts;
 * between the two every qemu-img call mamori makes goes through a function there, so the
 * options images are made with, the timeouts and the exit codes read as success are decided
 * in one place. Functions named after a use (imageInfo, convertImage, checkImage) map QEMU's
 * failure to IMAGE_UNREADABLE or IMAGE_CORRUPT; the plain verbs (createQcow2, commitImage,
 * rebaseUnsafe, queryImageInfo, ...) reject with run-process's PROCESS_FAILED /
 * PROCESS_TIMEOUT unchanged, because their callers tell a lock conflict from damage by
 * qemu-img's stderr and map it in their own words.
 */
import { runProcess } from '../core/run-process.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { QCOW2_LAYOUTS, type Qcow2Layout } from './qcow2-layouts.js';

export interface ImageInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile: string | null;
  /** qcow2's corrupt bit; true means QEMU refuses to write it. */
  corrupt: boolean;
}

/** The binary, found on PATH; qemu-img-write.ts runs it too. */
export const QEMU_IMG = 'qemu-img';

/**
 * An image from outside the site as QEMU must open it: the format pinned (never probed) and
 * backing files cut (`backing: null`), over the plain file, or over a byte range of it (a VMDK
 * inside an OVA). Build one with vetUntrustedImage (src/images/untrusted-image.ts), which has
 * read the headers and refused every reference leaving the image first; a split VMDK's
 * extents, proven to sit in the descriptor's own folder, are still opened by QEMU beside it.
 */
export interface UntrustedImageSpec {
  file: string;
  /** qemu-img's format name, decided by mamori from the headers or given by the person. */
  format: string;
  member?: { offset: number; size: number };
  /** A block device takes QEMU's host_device protocol driver, a file its file driver. */
  blockDevice?: boolean;
}

/**
 * The `json:` filename for an untrusted image; always used with `-f spec.format`. Checked
 * with qemu-img 7.2: a qcow2 whose backing is a host file reads that file's bytes when opened
 * by name, and zeros with `backing: null` (qemu-img info still reports the backing name it
 * read from the header, without opening it).
 */
export function untrustedImageName(spec: UntrustedImageSpec): string {
  const protocol = { driver: spec.blockDevice ? 'host_device' : 'file', filename: spec.file };
  const file = spec.member
    ? { driver: 'raw', offset: spec.member.offset, size: spec.member.size, file: protocol }
    : protocol;
  return `json:${JSON.stringify({ backing: null, file })}`;
}

/** qemu-img info of an untrusted image (format pinned, backing cut). */
export async function untrustedImageInfo(spec: UntrustedImageSpec): Promise<ImageInfo> {
  return imageInfo(untrustedImageName(spec), spec.format, spec.file);
}

/** qemu-img check of an untrusted image (format pinned, backing cut). */
export async function checkUntrustedImage(spec: UntrustedImageSpec): Promise<void> {
  await checkImage(untrustedImageName(spec), spec.format, spec.file);
}

/**
 * qemu-img info; a file QEMU cannot open becomes IMAGE_UNREADABLE naming QEMU's reason.
 * Opens `path` as QEMU names it: for an image from outside the site use untrustedImageInfo.
 */
export async function imageInfo(path: string, format?: string, label = path): Promise<ImageInfo> {
  try {
    const info = await queryImageInfo(path, { ...(format ? { format } : {}), forceShare: true });
    return {
      format: info.format,
      virtualSize: info.virtualSize,
      actualSize: info.actualSize,
      backingFile: info.backingFile,
      corrupt: info.corrupt,
    };
  } catch (e) {
    throw asImageError(e, label);
  }
}

/** A persistent dirty bitmap stored in a qcow2 image, as qemu-img info lists it. */
export interface StoredBitmap {
  name: string;
  granularity: number;
  /** `auto` (recording), `in-use` (a writer had it open, or died with it open). */
  flags: string[];
}

/** `qemu-img info --output=json`, the fields mamori reads. */
export interface QemuImgInfo {
  format: string;
  virtualSize: number;
  /** 0 when qemu-img does not say. */
  actualSize: number;
  /** The backing name written in the header (read, never opened when the caller cut it). */
  backingFile: string | null;
  /** qcow2's external data file. */
  dataFile: string | null;
  /** qcow2's corrupt bit; true means QEMU refuses to write it. */
  corrupt: boolean;
  /** qcow2's persistent bitmaps; [] for other formats. */
  bitmaps: StoredBitmap[];
}

export interface InfoOptions {
  /** Pinned (-f); probed by QEMU when absent, which only an image of this site may be. */
  format?: string;
  /** -U: read an image another process holds (what is read may be changing). */
  forceShare?: boolean;
  timeoutMs?: number;
}

/** qemu-img info; rejects with PROCESS_FAILED as is, IMAGE_UNREADABLE when the answer lacks a format or size. */
export async function queryImageInfo(path: string, opts: InfoOptions = {}): Promise<QemuImgInfo> {
  const args = [
    'info',
    '--output=json',
    ...(opts.forceShare === true ? ['-U'] : []),
    ...(opts.format ? ['-f', opts.format] : []),
    path,
  ];
  const { stdout } = await runProcess(QEMU_IMG, args, { timeoutMs: opts.timeoutMs ?? 30_000 });
  const j = JSON.parse(stdout) as Record<string, unknown>;
  const data = (
    j['format-specific'] as
      { data?: { corrupt?: unknown; 'data-file'?: unknown; bitmaps?: StoredBitmap[] } } | undefined
  )?.data;
  if (typeof j['format'] !== 'string' || typeof j['virtual-size'] !== 'number') {
    throw new MamoriError('IMAGE_UNREADABLE', `qemu-img info gave no format or size for ${path}`, {
      details: { image: path, out: stdout },
    });
  }
  return {
    format: j['format'],
    virtualSize: j['virtual-size'],
    actualSize: typeof j['actual-size'] === 'number' ? j['actual-size'] : 0,
    backingFile: typeof j['backing-filename'] === 'string' ? j['backing-filename'] : null,
    dataFile: typeof data?.['data-file'] === 'string' ? data['data-file'] : null,
    corrupt: data?.corrupt === true,
    bitmaps: data?.bitmaps ?? [],
  };
}

/**
 * `qemu-img info` without -U and without output: opening the image as a writer would fails
 * on a lock some other process holds. What it prints is not read.
 */
export async function openImageExclusive(path: string, format: string): Promise<void> {
  await runProcess(QEMU_IMG, ['info', '-f', format, path], { timeoutMs: 30_000 });
}

/**
 * QEMU's name for an image stored inside another file at a byte range (a VMDK inside an
 * OVA, which is an uncompressed tar): a raw node with offset and size under the format
 * QEMU probes or the caller gives with -f. Nothing is extracted (virt-v2v does the same).
 */
/** Opens whatever format QEMU finds there, backing included: for images from outside the site use untrustedImageName. */
export function tarMemberFilename(archive: string, member: { offset: number; size: number }): string {
  return `json:${JSON.stringify({ file: { driver: 'raw', offset: member.offset, size: member.size, file: { driver: 'file', filename: archive } } })}`;
}

/** `qemu-img check`: catches truncated or damaged images before they are used. */
export async function checkImage(path: string, format: string, label = path): Promise<void> {
  // Only formats with metadata to check; raw has none.
  if (!['qcow2', 'vmdk', 'vhdx', 'vpc', 'qed', 'vdi'].includes(format)) return;
  try {
    // qemu-img check exits 0 when clean, 3 for leaked clusters only (harmless), 63 when the
    // format has no check; 1 (could not complete, e.g. truncated) and 2 (corruption) refuse.
    await runProcess(QEMU_IMG, ['check', '-q', '-U', '-f', format, path], { timeoutMs: 300_000, okCodes: [0, 3, 63] });
  } catch (e) {
    if (isMamoriError(e, 'PROCESS_FAILED')) {
      throw new MamoriError(
        'IMAGE_CORRUPT',
        `${label} is damaged and cannot be used: ${String(e.details?.['stderr'] ?? e.message).trim()}`,
        { cause: e },
      );
    }
    throw e;
  }
}

/**
 * `qemu-img check` without -U on a qcow2 mamori wrote: 0 clean, 3 leaked clusters only
 * (harmless). Also fails (PROCESS_FAILED, as is) while another process holds the image.
 */
export async function checkImageExclusive(path: string): Promise<void> {
  await runProcess(QEMU_IMG, ['check', '-q', '-f', 'qcow2', path], { timeoutMs: 300_000, okCodes: [0, 3] });
}

/** `qemu-img measure`: what a copy of `src` as a qcow2 in `layout` will take (allocated data plus metadata). */
export async function measureQcow2(
  src: string,
  srcFormat: string,
  layout: Qcow2Layout,
  opts: { forceShare?: boolean } = {},
): Promise<{ required: number; fullyAllocated: number }> {
  const options = QCOW2_LAYOUTS[layout];
  const args = [
    'measure',
    ...(opts.forceShare === true ? ['-U'] : []),
    '--output=json',
    '-f',
    srcFormat,
    '-O',
    'qcow2',
    ...(options === null ? [] : ['-o', options]),
    src,
  ];
  const { stdout } = await runProcess(QEMU_IMG, args, { timeoutMs: 120_000 });
  const j = JSON.parse(stdout) as { required: number; 'fully-allocated': number };
  return { required: Number(j.required), fullyAllocated: Number(j['fully-allocated']) };
}

/** One extent of `qemu-img map --output=json`. */
export interface MapExtent {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
}

/** `qemu-img map`: where an image holds data; PROCESS_FAILED as is. */
export async function mapImage(
  path: string,
  format: string,
  opts: { forceShare?: boolean } = {},
): Promise<MapExtent[]> {
  const args = ['map', '--output=json', '-f', format, ...(opts.forceShare === true ? ['-U'] : []), path];
  return JSON.parse((await runProcess(QEMU_IMG, args, { timeoutMs: 60_000 })).stdout) as MapExtent[];
}

/**
 * Callers check existence and permissions with fs first; what remains is QEMU's own verdict.
 * Shared with qemu-img-write.ts, whose copies map a failure to read their source the same way.
 */
export function asImageError(e: unknown, path: string): unknown {
  if (!isMamoriError(e, 'PROCESS_FAILED')) return e;
  const stderr = String(e.details?.['stderr'] ?? '').trim();
  return new MamoriError('IMAGE_UNREADABLE', `QEMU cannot read ${path}: ${stderr.split('\n').at(-1) ?? stderr}`, {
    cause: e,
    details: { path, stderr },
  });
}
