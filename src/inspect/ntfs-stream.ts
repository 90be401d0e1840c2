import type { Run } from './ntfs-data-runs.js';
import { unreadable } from './ntfs-errors.js';
import type { Attribute } from './ntfs-mft-record.js';

// ---------------------------------------------------------------------------------------------
// Streams: an attribute's value, either in the record or spread over runs (possibly across
// several records' extents joined through the $ATTRIBUTE_LIST).

export type Stream =
  | { kind: 'resident'; value: Buffer }
  | { kind: 'runs'; runs: Run[]; dataSize: number; initializedSize: number; flags: number; volumeOffset: number };

export function streamSize(stream: Stream): number {
  return stream.kind === 'resident' ? stream.value.length : stream.dataSize;
}

/** Joins a non-resident attribute's extents, checking they follow one another without gaps. */
export function joinExtents(parts: Attribute[], what: string): Stream {
  const sorted = [...parts].sort((a, b) => (a.nonResident?.lowVcn ?? 0) - (b.nonResident?.lowVcn ?? 0));
  const first = sorted[0];
  if (first?.nonResident === undefined || first.nonResident.lowVcn !== 0)
    unreadable(`${what} has no first extent`, first?.volumeOffset);
  const runs: Run[] = [];
  let nextVcn = 0;
  let flags = 0;
  for (const part of sorted) {
    const nr = part.nonResident;
    if (nr === undefined) unreadable(`${what} mixes resident and non-resident parts`, part.volumeOffset);
    if (nr.lowVcn !== nextVcn)
      unreadable(`${what} has an extent starting at VCN ${nr.lowVcn} where ${nextVcn} was expected`, part.volumeOffset);
    runs.push(...nr.runs);
    nextVcn = Math.max(nr.highVcn + 1, nr.lowVcn);
    flags |= part.flags;
  }
  return {
    kind: 'runs',
    runs,
    dataSize: first.nonResident.dataSize,
    initializedSize: first.nonResident.initializedSize,
    flags,
    volumeOffset: first.volumeOffset,
  };
}

export function attributeToStream(attribute: Attribute, what: string): Stream {
  if (attribute.resident !== undefined) return { kind: 'resident', value: attribute.resident };
  return joinExtents([attribute], what);
}
