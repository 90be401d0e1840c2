import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { mapImage, queryImageInfo, type MapExtent } from '../qemu/qemu-img-read.js';
import { convertToRaw } from '../qemu/qemu-img-write.js';
import { decodeSlot, WL_RECORD_SIZE, type TornReason } from './writelog-format.js';

export { parseGuestSerial, parseHeartbeats, parseSerialAcks } from './serial-log.js';
export type { GuestSerialSummary, Heartbeat } from './serial-log.js';

export interface WriteLogGap {
  from: number;
  to: number;
}

export interface WriteLogTorn {
  slot: number;
  seq: number | null;
  reason: TornReason;
}

export interface WriteLogReport {
  image: string;
  format: string;
  virtualSize: number;
  recordSize: number;
  slotsScanned: number;
  /** Valid records anywhere on the device. */
  records: number;
  firstSequence: number | null;
  lastSequence: number | null;
  /** Highest N such that records 1..N are all valid (0 when record 1 is not). */
  gapFreePrefix: number;
  /** Seq ranges missing between valid records. */
  gaps: WriteLogGap[];
  /** At most TORN_LIST_LIMIT entries; tornCount has the full number. */
  torn: WriteLogTorn[];
  tornCount: number;
  bootIds: string[];
  /** No gaps and no torn slots: a gap-free prefix and nothing but zeros after it. */
  consistent: boolean;
  /** Wall time of the record with the highest seq, as the guest saw it. */
  lastTime: string | null;
}

export interface VerifyOptions {
  /**
   * Open the image with qemu-img -U (force-share), for an image a running QEMU
   * holds locked. What is read may then be changing underneath.
   */
  forceShare?: boolean;
  /** Where a non-raw image is converted to raw (default os.tmpdir()). */
  tempDir?: string;
  timeoutMs?: number;
}

export const TORN_LIST_LIMIT = 1000;
const READ_CHUNK = 1 << 20;

interface ImageInfo {
  format: string;
  virtualSize: number;
}

async function imageInfo(image: string, opts: VerifyOptions): Promise<ImageInfo> {
  try {
    // Format probed: this reads test images, never images from outside the site.
    const info = await queryImageInfo(image, { forceShare: opts.forceShare === true, timeoutMs: 60_000 });
    return { format: info.format, virtualSize: info.virtualSize };
  } catch (err) {
    // queryImageInfo's own IMAGE_UNREADABLE (no format or size) already says what went wrong.
    if (!isMamoriError(err, 'PROCESS_FAILED') && !isMamoriError(err, 'PROCESS_TIMEOUT')) throw err;
    throw new MamoriError(
      'IMAGE_UNREADABLE',
      `qemu-img cannot open ${image}: ${(err as Error).message}. If a running QEMU holds it, stop the VM or verify with forceShare.`,
      { cause: err, details: { image } },
    );
  }
}

/**
 * Slot ranges [first, end) that may hold data. Holes and zero extents are
 * skipped so a mostly empty 100 GiB disk costs no more than its written part.
 */
async function dataSlotRanges(
  rawPath: string,
  virtualSize: number,
  opts: VerifyOptions,
): Promise<Array<[number, number]>> {
  const slots = Math.floor(virtualSize / WL_RECORD_SIZE);
  let extents: MapExtent[];
  try {
    extents = await mapImage(rawPath, 'raw', { forceShare: opts.forceShare === true });
  } catch {
    // Without a map every slot is read: slower, never wrong.
    return slots > 0 ? [[0, slots]] : [];
  }
  const ranges: Array<[number, number]> = [];
  for (const e of extents) {
    if (!e.data || e.zero) continue;
    const first = Math.floor(e.start / WL_RECORD_SIZE);
    const end = Math.min(slots, Math.ceil((e.start + e.length) / WL_RECORD_SIZE));
    if (first >= end) continue;
    const prev = ranges[ranges.length - 1];
    if (prev && first <= prev[1]) prev[1] = Math.max(prev[1], end);
    else ranges.push([first, end]);
  }
  return ranges;
}

class ReportBuilder {
  records = 0;
  firstSequence: number | null = null;
  lastSequence: number | null = null;
  lastTimeNs: bigint | null = null;
  gaps: WriteLogGap[] = [];
  torn: WriteLogTorn[] = [];
  tornCount = 0;
  bootIds: string[] = [];

  add(slot: number, buf: Buffer): void {
    const state = decodeSlot(buf, slot);
    if (state.kind === 'empty') return;
    if (state.kind === 'torn') {
      this.tornCount++;
      if (this.torn.length < TORN_LIST_LIMIT) this.torn.push({ slot, seq: state.seq, reason: state.reason });
      return;
    }
    const { seq, bootId, timeNs } = state.record;
    // Slots arrive in ascending order and a valid record's seq is its slot + 1.
    const expected = (this.lastSequence ?? 0) + 1;
    if (seq > expected) this.gaps.push({ from: expected, to: seq - 1 });
    this.firstSequence ??= seq;
    this.lastSequence = seq;
    this.lastTimeNs = timeNs;
    this.records++;
    if (!this.bootIds.includes(bootId)) this.bootIds.push(bootId);
  }
}

async function scanRaw(rawPath: string, ranges: Array<[number, number]>): Promise<ReportBuilder> {
  const builder = new ReportBuilder();
  const fh = await open(rawPath, 'r');
  try {
    const buf = Buffer.alloc(READ_CHUNK);
    for (const [first, end] of ranges) {
      for (let slot = first; slot < end;) {
        const want = Math.min(end - slot, READ_CHUNK / WL_RECORD_SIZE) * WL_RECORD_SIZE;
        const { bytesRead } = await fh.read(buf, 0, want, slot * WL_RECORD_SIZE);
        const whole = Math.floor(bytesRead / WL_RECORD_SIZE);
        // A short read means the device ended early; stop rather than loop.
        if (whole === 0) return builder;
        for (let i = 0; i < whole; i++, slot++) {
          builder.add(slot, buf.subarray(i * WL_RECORD_SIZE, (i + 1) * WL_RECORD_SIZE));
        }
      }
    }
  } finally {
    await fh.close();
  }
  return builder;
}

/**
 * Reads a write log off a disk image of any format qemu-img reads (non-raw
 * images are converted to a temporary raw file through QEMU, never parsed here)
 * and reports what survived: the gap-free prefix, gaps and torn records.
 */
export async function verifyWriteLog(imagePath: string, options: VerifyOptions = {}): Promise<WriteLogReport> {
  try {
    await stat(imagePath);
  } catch (err) {
    throw new MamoriError('IMAGE_NOT_FOUND', `no disk image at ${imagePath}: check the path`, {
      cause: err,
      details: { image: imagePath },
    });
  }
  const info = await imageInfo(imagePath, options);
  let tempDir: string | null = null;
  let rawPath = imagePath;
  try {
    if (info.format !== 'raw') {
      tempDir = await mkdtemp(join(options.tempDir ?? tmpdir(), 'mamori-wl-verify-'));
      rawPath = join(tempDir, 'disk.raw');
      try {
        await convertToRaw(imagePath, info.format, rawPath, {
          forceShare: options.forceShare === true,
          ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
        });
      } catch (err) {
        throw new MamoriError(
          'IMAGE_UNREADABLE',
          `qemu-img could not read ${imagePath} (${info.format}): ${(err as Error).message}`,
          {
            cause: err,
            details: { image: imagePath, format: info.format },
          },
        );
      }
    }
    const ranges = await dataSlotRanges(rawPath, info.virtualSize, options);
    let b: ReportBuilder;
    try {
      b = await scanRaw(rawPath, ranges);
    } catch (err) {
      throw new MamoriError('IMAGE_UNREADABLE', `reading ${imagePath} failed: ${(err as Error).message}`, {
        cause: err,
        details: { image: imagePath },
      });
    }
    const gapFreePrefix = b.firstSequence === 1 ? (b.gaps[0]?.from ?? (b.lastSequence ?? 0) + 1) - 1 : 0;
    return {
      image: imagePath,
      format: info.format,
      virtualSize: info.virtualSize,
      recordSize: WL_RECORD_SIZE,
      slotsScanned: Math.floor(info.virtualSize / WL_RECORD_SIZE),
      records: b.records,
      firstSequence: b.firstSequence,
      lastSequence: b.lastSequence,
      gapFreePrefix,
      gaps: b.gaps,
      torn: b.torn,
      tornCount: b.tornCount,
      bootIds: b.bootIds,
      consistent: b.gaps.length === 0 && b.tornCount === 0,
      lastTime: b.lastTimeNs === null ? null : nsToIso(b.lastTimeNs),
    };
  } finally {
    if (tempDir) await rm(tempDir, { recursive: true, force: true });
  }
}

function nsToIso(ns: bigint): string | null {
  const d = new Date(Number(ns / 1_000_000n));
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}
