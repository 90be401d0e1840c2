import { createHash } from 'node:crypto';
import {
  DIGEST_BYTES,
  MAX_CHECKSUM_SPAN,
  chunksOf,
  differingChunks,
  zeroDigest,
} from '../replication/block-checksums.js';
import type { ByteRange } from '../nbd/extent-copy.js';
import type { P2vFreezeAnswer } from './p2v-protocol.js';

/** What the copy needs of the agent: digests where the disk lies, and a freeze for the last pass. */
export interface ConvergeAgent {
  checksums(span: ByteRange, chunkSize: number): Promise<Buffer>;
  freeze(): Promise<P2vFreezeAnswer>;
  thaw(): Promise<void>;
}

export interface ConvergeSource {
  read(offset: number, length: number): Promise<Buffer>;
}

export interface ConvergeTarget {
  write(offset: number, data: Buffer): Promise<void>;
  writeZeroes(offset: number, length: number): Promise<void>;
  flush(): Promise<void>;
}

export interface ConvergePass {
  pass: number;
  /** Bytes in chunks that differed from the copy when the pass started. */
  changedBytes: number;
  /** Of those, bytes sent over the link (the rest were zeros, written as holes). */
  sentBytes: number;
  frozen: boolean;
  seconds: number;
}

export interface ConvergeOptions {
  sizeBytes: number;
  chunkSize: number;
  /** Passes stop once one finds at most this much changed: the remainder is small. */
  convergeBelowBytes: number;
  /** Passes before the last, at most (a source that changes faster than the link copies never converges). */
  maxPasses: number;
  /** Checks of the last pass, at most: it repeats until a check finds nothing left to send. */
  finalChecks?: number;
  concurrency?: number;
  onPass?: (p: ConvergePass) => void | Promise<void>;
  onBytes?: (pass: number, done: number, total: number) => void;
}

export type Consistency = 'frozen' | 'crash-consistent' | 'changing';

export interface ConvergeResult {
  passes: ConvergePass[];
  bytesSent: number;
  consistency: Consistency;
  frozenFilesystems: string[];
  /** What the consistency means for this copy, in words an operator acts on. */
  note: string;
}

/**
 * Copies a disk that keeps changing, in passes (vCenter Converter's and rsync's approach,
 * with the checksums computed where the disk lies): each pass asks the agent for the
 * digest of every chunk, compares them with the digests of what the copy holds, and sends
 * only the chunks that differ. The copy's digests are those of the bytes actually written,
 * never the agent's, so a chunk that changed while it was read is simply found again by
 * the next pass. The first pass starts from an empty image: chunks that read as zeros are
 * never sent.
 *
 * Passes repeat until one finds at most `convergeBelowBytes` changed (or `maxPasses` ran).
 * Then the agent freezes the device's filesystems and the last pass repeats until a check
 * finds nothing to send: the copy then equals the device, frozen, byte for byte.
 */
export async function convergeCopy(
  agent: ConvergeAgent,
  source: ConvergeSource,
  target: ConvergeTarget,
  o: ConvergeOptions,
): Promise<ConvergeResult> {
  const whole: ByteRange = { offset: 0, length: o.sizeBytes };
  const chunks = chunksOf(whole, o.chunkSize);
  // The target starts as a new, empty image: every chunk reads as zeros.
  const held = Buffer.alloc(chunks.length * DIGEST_BYTES);
  chunks.forEach((c, i) => zeroDigest(c.length).copy(held, i * DIGEST_BYTES));
  const passes: ConvergePass[] = [];

  const runPass = async (frozen: boolean): Promise<ConvergePass> => {
    const pass = passes.length + 1;
    const t0 = performance.now();
    let changedBytes = 0;
    let sentBytes = 0;
    for (let offset = 0; offset < o.sizeBytes; offset += MAX_CHECKSUM_SPAN) {
      const span = { offset, length: Math.min(MAX_CHECKSUM_SPAN, o.sizeBytes - offset) };
      const first = offset / o.chunkSize;
      const spanChunks = Math.ceil(span.length / o.chunkSize);
      const theirs = await agent.checksums(span, o.chunkSize);
      const mine = held.subarray(first * DIGEST_BYTES, (first + spanChunks) * DIGEST_BYTES);
      const diff = differingChunks(span, o.chunkSize, theirs, mine);
      const total = [...diff.data, ...diff.zero].reduce((n, c) => n + c.length, 0);
      changedBytes += total;
      let done = 0;
      for (const z of diff.zero) {
        await target.writeZeroes(z.offset, z.length);
        zeroDigest(z.length).copy(held, (z.offset / o.chunkSize) * DIGEST_BYTES);
        done += z.length;
      }
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < diff.data.length) {
          const c = diff.data[next++]!;
          const data = await source.read(c.offset, c.length);
          await target.write(c.offset, data);
          createHash('sha256')
            .update(data)
            .digest()
            .copy(held, (c.offset / o.chunkSize) * DIGEST_BYTES);
          sentBytes += c.length;
          done += c.length;
          o.onBytes?.(pass, done, total);
        }
      };
      await Promise.all(Array.from({ length: Math.min(o.concurrency ?? 4, diff.data.length) }, worker));
    }
    await target.flush();
    const p: ConvergePass = { pass, changedBytes, sentBytes, frozen, seconds: (performance.now() - t0) / 1000 };
    passes.push(p);
    await o.onPass?.(p);
    return p;
  };

  for (;;) {
    const p = await runPass(false);
    if (p.changedBytes <= o.convergeBelowBytes || passes.length >= o.maxPasses) break;
  }
  const freeze = await agent.freeze();
  const frozen = freeze.frozen.length > 0;
  let clean = false;
  try {
    for (let check = 0; check < (o.finalChecks ?? 3) && !clean; check++)
      clean = (await runPass(frozen)).changedBytes === 0;
  } finally {
    if (frozen) await agent.thaw();
  }
  const bytesSent = passes.reduce((n, p) => n + p.sentBytes, 0);
  if (!clean) {
    return {
      passes,
      bytesSent,
      consistency: 'changing',
      frozenFilesystems: freeze.frozen,
      note:
        `the device was still changing during the last pass${frozen ? ' although its mounted filesystems were frozen (something writes to it directly)' : ''}: ` +
        `the copy holds chunks from different moments and may not be consistent; stop what writes to ${frozen ? 'the raw device' : 'it'} and convert again`,
    };
  }
  if (frozen) {
    return {
      passes,
      bytesSent,
      consistency: 'frozen',
      frozenFilesystems: freeze.frozen,
      note: `the last pass ran with ${freeze.frozen.join(', ')} frozen: each filesystem is copied clean, as at one moment`,
    };
  }
  return {
    passes,
    bytesSent,
    consistency: 'crash-consistent',
    frozenFilesystems: [],
    note: `crash-consistent: ${freeze.notFrozenBecause ?? 'nothing could be frozen'}; the copy equals the device as it was during the last check, like a disk after a power cut`,
  };
}
