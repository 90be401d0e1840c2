/**
 * The one door to qemu-img: every call mamori makes goes through a function here, so the
 * options images are made with, the timeouts and the exit codes read as success are decided
 * in one place. Functions named after a use (imageInfo, convertImage, checkImage) map QEMU's
 * failure to IMAGE_UNREADABLE or IMAGE_CORRUPT; the plain verbs (createQcow2, commitImage,
 * rebaseUnsafe, queryImageInfo, ...) reject with run-process's PROCESS_FAILED /
 * PROCESS_TIMEOUT unchanged, because their callers tell a lock conflict from damage by
 * qemu-img's stderr and map it in their own words.
 */
import { syncFile } from '../core/durable-sync.js';
import { runProcess } from '../core/run-process.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';

export interface ImageInfo {
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFile: string | null;
  /** qcow2's corrupt bit; true means QEMU refuses to write it. */
  corrupt: boolean;
}

const QEMU_IMG = 'qemu-img';

/**
 * How mamori lays out a new qcow2 (`-o`).
 * - `site`: 128 KiB clusters with extended L2 (32 subclusters each): first writes into fresh
 *   images and overlays are faster (notes/qemu-7.2.md). Every image and overlay of a site.
 * - `replica`: a desktop pool's replica is written once and only read after: extended L2
 *   entries (sub-cluster allocation, which the desktops' overlays keep for their writes)
 *   would only double its L2 tables, 256 KiB more per 4 GiB replica than plain 128 KiB
 *   clusters (bench/pools).
 * - `qemu-default`: no -o at all; a fleecing scratch image lives for one cycle.
 */
export const QCOW2_LAYOUTS = {
  site: 'cluster_size=131072,extended_l2=on',
  replica: 'cluster_size=131072',
  'qemu-default': null,
} as const;
export type Qcow2Layout = keyof typeof QCOW2_LAYOUTS;

/** A backing file as written into an overlay's header: the name (absolute, or relative to the overlay) and its pinned format. */
export interface BackingRef {
  file: string;
  format: string;
}

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

/** Copies an untrusted image into a new site image (format pinned, backing cut); see convertImage. */
export async function convertUntrustedImage(
  spec: UntrustedImageSpec,
  dst: string,
  dstFormat: 'qcow2' | 'raw',
  onProgress?: (fraction: number) => void,
): Promise<void> {
  await convertImage(untrustedImageName(spec), spec.format, dst, dstFormat, onProgress);
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

/** A new site image: qcow2 in the site layout, or raw. */
export async function createImage(path: string, format: 'qcow2' | 'raw', sizeBytes: number): Promise<void> {
  const args =
    format === 'qcow2' ? createQcow2Args(path, { sizeBytes }) : ['create', '-q', '-f', 'raw', path, String(sizeBytes)];
  await runProcess(QEMU_IMG, args, { timeoutMs: 60_000 });
}

export interface Qcow2CreateOptions {
  /** Default `site`. */
  layout?: Qcow2Layout;
  backing?: BackingRef;
  /** -u: the backing is not opened (a host device a VM holds, or a name relative to a folder). */
  unsafe?: boolean;
  /** Without it the overlay takes its backing's size. */
  sizeBytes?: number;
}

/** `qemu-img create -f qcow2`: an image, or an overlay on `backing`. */
export async function createQcow2(path: string, opts: Qcow2CreateOptions = {}): Promise<void> {
  await runProcess(QEMU_IMG, createQcow2Args(path, opts), { timeoutMs: 30_000 });
}

function createQcow2Args(path: string, opts: Qcow2CreateOptions): string[] {
  const options = QCOW2_LAYOUTS[opts.layout ?? 'site'];
  return [
    'create',
    '-q',
    '-f',
    'qcow2',
    ...(options === null ? [] : ['-o', options]),
    ...(opts.unsafe === true ? ['-u'] : []),
    ...(opts.backing ? ['-b', opts.backing.file, '-F', opts.backing.format] : []),
    path,
    ...(opts.sizeBytes === undefined ? [] : [String(opts.sizeBytes)]),
  ];
}

/**
 * Copies an image through QEMU's block layer. -W (out-of-order writes) is what makes
 * it fast here; -n --target-is-zero is not used so the target is created fresh.
 * The target is fsynced once it is complete (durable-sync.ts says why not -t writeback).
 * `onProgress` gets 0..1 from qemu-img's -p output.
 */
export async function convertImage(
  src: string,
  srcFormat: string,
  dst: string,
  dstFormat: 'qcow2' | 'raw',
  onProgress?: (fraction: number) => void,
): Promise<void> {
  const args = convertArgs({
    src,
    srcFormat,
    dst,
    dstFormat,
    dstOptions: dstFormat === 'qcow2' ? QCOW2_LAYOUTS.site : null,
    progress: true,
    outOfOrder: true,
  });
  await runConvert(args, src, onProgress);
  await syncFile(dst);
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

/** Foreign formats mamori writes for people moving to VMware or Hyper-V. */
export type ExportFormat = 'vmdk' | 'vmdk-stream' | 'vhdx';

/**
 * Writes an image for another hypervisor: a monolithic sparse VMDK (Workstation, or
 * vmkfstools -i on ESXi), a streamOptimized VMDK (what an OVA carries), or a dynamic VHDX.
 * VMDKs say lsilogic, the SCSI adapter every VMware guest OS has a driver for. No -U:
 * qemu-img holds QEMU's image lock on the source, so no VM can start on it mid-copy.
 */
export async function exportImage(
  src: string,
  srcFormat: string,
  dst: string,
  format: ExportFormat,
  onProgress?: (fraction: number) => void,
): Promise<void> {
  const options: Record<ExportFormat, [string, string]> = {
    vmdk: ['vmdk', 'subformat=monolithicSparse,adapter_type=lsilogic'],
    'vmdk-stream': ['vmdk', 'subformat=streamOptimized,adapter_type=lsilogic'],
    vhdx: ['vhdx', 'subformat=dynamic'],
  };
  const [dstFormat, dstOptions] = options[format];
  await runConvert(convertArgs({ src, srcFormat, dst, dstFormat, dstOptions, progress: true }), src, onProgress);
  await syncFile(dst);
}

async function runConvert(args: string[], src: string, onProgress?: (fraction: number) => void): Promise<void> {
  let buffered = '';
  const parse = (chunk: string): void => {
    buffered += chunk;
    const m = [...buffered.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)].at(-1);
    if (m && onProgress) onProgress(Number(m[1]) / 100);
    buffered = buffered.slice(-64);
  };
  try {
    await runProcess(QEMU_IMG, args, { timeoutMs: 6 * 3600_000, onStdout: parse });
  } catch (e) {
    throw asImageError(e, src);
  }
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

/**
 * `qemu-img commit -d`: writes `top`'s data into the image below it (`base`, or its
 * backing), leaving `top` as it was (-d: the caller drops it right after).
 */
export async function commitImage(top: string, opts: { format?: string; base?: string } = {}): Promise<void> {
  const args = [
    'commit',
    '-q',
    '-d',
    ...(opts.format ? ['-f', opts.format] : []),
    ...(opts.base ? ['-b', opts.base] : []),
    top,
  ];
  await runProcess(QEMU_IMG, args, { timeoutMs: 6 * 3600_000 });
}

/**
 * `qemu-img rebase -u` of a qcow2: rewrites the backing name and format in its header only,
 * for a caller that knows the new backing reads the same bytes as the old one.
 */
export async function rebaseUnsafe(
  image: string,
  backing: BackingRef,
  opts: { timeoutMs?: number } = {},
): Promise<void> {
  const args = ['rebase', '-q', '-u', '-f', 'qcow2', '-b', backing.file, '-F', backing.format, image];
  await runProcess(QEMU_IMG, args, { timeoutMs: opts.timeoutMs ?? 30_000 });
}

/**
 * `qemu-img rebase` (safe): writes into `image` what its old backing reads differently from
 * `backing` (null: no backing at all, so everything the old chain reads), then sets the name.
 */
export async function rebaseSafe(
  image: string,
  backing: BackingRef | null,
  opts: { format?: string } = {},
): Promise<void> {
  const args = [
    'rebase',
    '-q',
    ...(opts.format ? ['-f', opts.format] : []),
    '-b',
    backing?.file ?? '',
    ...(backing ? ['-F', backing.format] : []),
    image,
  ];
  await runProcess(QEMU_IMG, args, { timeoutMs: 6 * 3600_000 });
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

/** Flattens `src` (with its backing chain) into one new qcow2 in `layout`; PROCESS_FAILED as is, no fsync (the caller syncs). */
export async function flattenToQcow2(
  src: string,
  srcFormat: string,
  dst: string,
  layout: Qcow2Layout,
  opts: { forceShare?: boolean } = {},
): Promise<void> {
  const args = convertArgs({
    src,
    srcFormat,
    dst,
    dstFormat: 'qcow2',
    dstOptions: QCOW2_LAYOUTS[layout],
    forceShare: opts.forceShare === true,
    outOfOrder: true,
  });
  await runProcess(QEMU_IMG, args, { timeoutMs: 6 * 3600_000 });
}

/** Copies `src` into a raw file to be read byte by byte; PROCESS_FAILED as is. */
export async function convertToRaw(
  src: string,
  srcFormat: string,
  dst: string,
  opts: { forceShare?: boolean; timeoutMs?: number } = {},
): Promise<void> {
  const args = convertArgs({
    src,
    srcFormat,
    dst,
    dstFormat: 'raw',
    dstOptions: null,
    forceShare: opts.forceShare === true,
  });
  await runProcess(QEMU_IMG, args, { timeoutMs: opts.timeoutMs ?? 30 * 60_000 });
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

/** One `qemu-img bitmap` action; qemu-img runs them in order on one bitmap. */
export type BitmapEdit =
  | { op: 'add'; granularity: number; disabled?: boolean }
  | { op: 'remove' }
  | { op: 'clear' }
  | { op: 'enable' }
  | { op: 'disable' }
  | { op: 'merge'; source: string };

/** `qemu-img bitmap` on a qcow2 no process holds; PROCESS_FAILED as is (a lock conflict included). */
export async function editBitmap(file: string, name: string, actions: readonly BitmapEdit[]): Promise<void> {
  const args = ['bitmap'];
  for (const a of actions) {
    if (a.op === 'merge') args.push('--merge', a.source);
    else args.push(`--${a.op}`);
    // `--add --disable` adds a disabled bitmap.
    if (a.op === 'add' && a.disabled === true) args.push('--disable');
  }
  const add = actions.find((a) => a.op === 'add');
  if (add?.op === 'add') args.push('-g', String(add.granularity));
  args.push('-f', 'qcow2', file, name);
  await runProcess(QEMU_IMG, args, { timeoutMs: 60_000 });
}

interface ConvertSpec {
  src: string;
  srcFormat: string;
  dst: string;
  dstFormat: string;
  dstOptions: string | null;
  /** -p, parsed by runConvert. */
  progress?: boolean;
  forceShare?: boolean;
  /** -W -m 8: out-of-order writes over 8 coroutines, what makes a copy fast here. */
  outOfOrder?: boolean;
}

function convertArgs(c: ConvertSpec): string[] {
  return [
    'convert',
    ...(c.progress === true ? ['-p'] : []),
    ...(c.forceShare === true ? ['-U'] : []),
    ...(c.outOfOrder === true ? ['-W', '-m', '8'] : []),
    '-f',
    c.srcFormat,
    '-O',
    c.dstFormat,
    ...(c.dstOptions === null ? [] : ['-o', c.dstOptions]),
    c.src,
    c.dst,
  ];
}

/** Callers check existence and permissions with fs first; what remains is QEMU's own verdict. */
function asImageError(e: unknown, path: string): unknown {
  if (!isMamoriError(e, 'PROCESS_FAILED')) return e;
  const stderr = String(e.details?.['stderr'] ?? '').trim();
  return new MamoriError('IMAGE_UNREADABLE', `QEMU cannot read ${path}: ${stderr.split('\n').at(-1) ?? stderr}`, {
    cause: e,
    details: { path, stderr },
  });
}
