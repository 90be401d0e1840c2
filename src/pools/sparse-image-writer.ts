import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createQcow2 } from '../qemu/qemu-img-write.js';

/**
 * Writes small images sparse, in-process. A new qcow2's metadata clusters and an ISO's
 * system area are mostly zeros written out in full (~380 KiB per file with 128 KiB
 * clusters); writing only the 4 KiB blocks that hold something leaves ~12 KiB, and reads
 * stay the same. So a hundred desktops cost what their changes cost.
 *
 * New qcow2 files are made once per shape by qemu-img and then copied: a qcow2 header holds
 * no per-file identity (no UUID, no timestamp), so every overlay on one replica, and every
 * empty disk of one size, is the same bytes. That saves a qemu-img start per desktop.
 */
const BLOCK = 4096;
const templates = new Map<string, Promise<Buffer>>();

/** The bytes of `qemu-img create` for this shape (backing file, or size), made once per process. */
export function qcow2Template(opts: { backing?: string; sizeBytes?: number }): Promise<Buffer> {
  const key = JSON.stringify(opts);
  let t = templates.get(key);
  if (!t) {
    t = (async () => {
      const dir = await mkdtemp(join(tmpdir(), 'mamori-qcow2-'));
      try {
        const file = join(dir, 't.qcow2');
        await createQcow2(file, {
          ...(opts.backing ? { backing: { file: opts.backing, format: 'qcow2' } } : {}),
          ...(opts.sizeBytes === undefined ? {} : { sizeBytes: opts.sizeBytes }),
        });
        return await readFile(file);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    })();
    t.catch(() => templates.delete(key));
    templates.set(key, t);
  }
  return t;
}

/** Writes `bytes` to a new file at `path`, leaving holes where whole 4 KiB blocks are zero; fsyncs unless told not to. */
export async function writeSparse(path: string, bytes: Buffer, durable: boolean): Promise<void> {
  const fh = await open(path, 'wx');
  try {
    for (let off = 0; off < bytes.length; off += BLOCK) {
      const block = bytes.subarray(off, Math.min(off + BLOCK, bytes.length));
      if (block.some((b) => b !== 0)) await fh.write(block, 0, block.length, off);
    }
    await fh.truncate(bytes.length);
    if (durable) await fh.sync();
  } finally {
    await fh.close();
  }
}
