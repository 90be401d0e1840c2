import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../src/core/run-process.js';
import { decodeSlot, WL_RECORD_SIZE, type WriteLogRecord } from '../../src/guest/writelog-format.js';

/**
 * Every intact write-log record on a disk image, by seq. The image is copied to raw through
 * qemu-img (any format; -U so an image a paused or running QEMU holds can be read: the
 * records a test asks about are written once and never change after).
 */
export async function writeLogRecords(image: string): Promise<Map<number, WriteLogRecord>> {
  const dir = await mkdtemp(join(tmpdir(), 'mamori-wl-loss-'));
  try {
    const raw = join(dir, 'disk.raw');
    await runProcess('qemu-img', ['convert', '-U', '-O', 'raw', image, raw], { timeoutMs: 300_000 });
    const out = new Map<number, WriteLogRecord>();
    const fh = await open(raw, 'r');
    try {
      const buf = Buffer.alloc(256 * WL_RECORD_SIZE);
      for (let pos = 0; ; pos += buf.length) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        for (let i = 0; i + WL_RECORD_SIZE <= bytesRead; i += WL_RECORD_SIZE) {
          const slot = (pos + i) / WL_RECORD_SIZE;
          const s = decodeSlot(buf.subarray(i, i + WL_RECORD_SIZE), slot);
          if (s.kind === 'valid') out.set(s.record.seq, s.record);
        }
        if (bytesRead < buf.length) break;
      }
    } finally {
      await fh.close();
    }
    return out;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface TrueLoss {
  /** Seconds from the last record the recovered disk holds of the protected log to the last one the guest acknowledged. */
  sec: number;
  lastAcked: number;
  lastRecovered: number;
}

/**
 * The data a recovery lost, measured on the write log: the guest acknowledged `lastAcked`
 * (flushed, so it is on the protected disk with the time the guest built it); the recovered
 * disk holds the protected log up to some record (the highest seq where both disks hold the
 * same record: after it, the recovered VM wrote its own, with its own boot id). The loss is
 * the time between those two records, both read off the guest's one clock.
 */
export function trueLoss(
  protectedLog: Map<number, WriteLogRecord>,
  recoveredLog: Map<number, WriteLogRecord>,
  lastAcked: number,
): TrueLoss {
  const acked = protectedLog.get(lastAcked);
  if (!acked) throw new Error(`record ${lastAcked} was acknowledged but is not on the protected disk`);
  let lastRecovered = 0;
  for (const [seq, r] of recoveredLog) {
    const p = protectedLog.get(seq);
    if (seq > lastRecovered && seq <= lastAcked && p && p.bootId === r.bootId && p.timeNs === r.timeNs)
      lastRecovered = seq;
  }
  const base = protectedLog.get(lastRecovered);
  if (!base) throw new Error('the recovered disk holds none of the protected write log');
  return { sec: Number(acked.timeNs - base.timeNs) / 1e9, lastAcked, lastRecovered };
}
