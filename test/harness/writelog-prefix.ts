import { writeLogRecords } from './writelog-loss.js';

/**
 * Record by record, what a copy of a guest's data disk (a test VM's, a recovered VM's) holds of
 * the protected disk's write log: `prefix` is the longest run 1..N of records the copy holds
 * exactly as the protected guest wrote them (intact, with the same boot id and time), so the
 * copy is a gap-free prefix of the log up to N. `mismatched` lists the seqs at or below
 * `upTo` that the copy holds differently from the protected disk, or holds where the protected
 * disk has none (a torn or foreign record inside the prefix): it must be empty.
 */
export async function logPrefixOf(
  protectedDisk: string,
  copyDisk: string,
  upTo: number,
): Promise<{ prefix: number; mismatched: number[] }> {
  const [source, copy] = await Promise.all([writeLogRecords(protectedDisk), writeLogRecords(copyDisk)]);
  const same = (seq: number): boolean => {
    const s = source.get(seq);
    const c = copy.get(seq);
    return !!s && !!c && s.bootId === c.bootId && s.timeNs === c.timeNs;
  };
  let prefix = 0;
  while (same(prefix + 1)) prefix += 1;
  const mismatched: number[] = [];
  for (let seq = 1; seq <= upTo; seq++) if (copy.has(seq) && !same(seq)) mismatched.push(seq);
  return { prefix, mismatched };
}
