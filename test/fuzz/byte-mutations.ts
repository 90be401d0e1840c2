import fc from 'fast-check';

/**
 * Byte-level mutations of a real input: flip a bit, overwrite with an interesting value (0,
 * all ones, the signed limits, sizes near the input's length), copy one range over another,
 * truncate; for streams also insert and delete. Positions favour the "hot" ranges, the bytes
 * a parser read from the clean seed, so mutations land in metadata rather than file data.
 */
export interface ByteRange {
  start: number;
  length: number;
}

export type ByteOp =
  | { op: 'flip'; at: number; mask: number }
  | { op: 'set'; at: number; bytes: number[] }
  | { op: 'copy'; from: number; at: number; length: number }
  | { op: 'truncate'; length: number }
  | { op: 'insert'; at: number; bytes: number[] }
  | { op: 'delete'; at: number; length: number };

const INTERESTING = [
  0, 1, 2, 7, 8, 0x10, 0x7f, 0x80, 0xff, 0x100, 0x1ff, 0x200, 0x3ff, 0x400, 0xfff, 0x1000, 0x7fff, 0x8000, 0xffff,
  0x10000, 0x100000, 0x7fffffff, 0x80000000, 0xffffffff,
];

function encode(value: bigint, width: number, bigEndian: boolean): number[] {
  const out: number[] = [];
  for (let i = 0; i < width; i++) out.push(Number((value >> BigInt(8 * i)) & 0xffn));
  return bigEndian ? out.reverse() : out;
}

/** A position in [0, size), mostly inside a hot range. */
function position(size: number, hot: readonly ByteRange[]): fc.Arbitrary<number> {
  const any = fc.nat({ max: Math.max(0, size - 1) });
  const inHot = hot.filter((r) => r.start < size && r.length > 0);
  if (inHot.length === 0) return any;
  const hotPosition = fc.tuple(fc.nat({ max: inHot.length - 1 }), fc.nat()).map(([i, r]) => {
    const range = inHot[i]!;
    return Math.min(size - 1, range.start + (r % range.length));
  });
  return fc.oneof({ arbitrary: hotPosition, weight: 5 }, { arbitrary: any, weight: 1 });
}

/** An interesting value, 1 to 8 bytes wide, either byte order; sizes near `size` among the values. */
function interesting(size: number): fc.Arbitrary<number[]> {
  const values = [
    ...INTERESTING.map(BigInt),
    ...[size - 1, size, size + 1, size >> 9, size >> 12, (size >> 9) + 1].filter((v) => v >= 0).map(BigInt),
    0x7fffffffffffffffn,
    0xffffffffffffffffn,
    0x8000000000000000n,
  ];
  return fc
    .tuple(fc.constantFrom(...values), fc.constantFrom(1, 2, 4, 8), fc.boolean(), fc.boolean())
    .map(([v, w, be, negate]) => encode(negate ? -v & ((1n << BigInt(8 * w)) - 1n) : v, w, be));
}

/** Mutations of an input of `size` bytes; `stream` adds insertions and deletions (layouts that are not fixed). */
export function byteOps(
  size: number,
  hot: readonly ByteRange[],
  opts: { maxOps?: number; stream?: boolean } = {},
): fc.Arbitrary<ByteOp[]> {
  const at = position(size, hot);
  const bytes = fc.oneof(
    { arbitrary: interesting(size), weight: 3 },
    { arbitrary: fc.array(fc.nat({ max: 255 }), { minLength: 1, maxLength: 16 }), weight: 1 },
  );
  const length = fc.oneof(fc.integer({ min: 1, max: 16 }), fc.integer({ min: 1, max: 4096 }));
  const ops: fc.Arbitrary<ByteOp>[] = [
    fc.record({ op: fc.constant('flip' as const), at, mask: fc.constantFrom(1, 2, 4, 8, 16, 32, 64, 128, 0xff) }),
    fc.record({ op: fc.constant('set' as const), at, bytes }),
    fc.record({ op: fc.constant('set' as const), at, bytes }),
    fc.record({ op: fc.constant('copy' as const), from: at, at, length }),
  ];
  const truncate = fc.record({ op: fc.constant('truncate' as const), length: fc.oneof(at, fc.nat({ max: size })) });
  const weighted = [...ops.map((arbitrary) => ({ arbitrary, weight: 4 })), { arbitrary: truncate, weight: 1 }];
  if (opts.stream) {
    weighted.push({ arbitrary: fc.record({ op: fc.constant('insert' as const), at, bytes }), weight: 2 });
    weighted.push({ arbitrary: fc.record({ op: fc.constant('delete' as const), at, length }), weight: 2 });
  }
  return fc.array(fc.oneof(...weighted), { minLength: 1, maxLength: opts.maxOps ?? 6 });
}

/** The mutated copy of a small input (streams, hives, archives). */
export function applyOps(base: Buffer, ops: readonly ByteOp[]): Buffer {
  let buf = Buffer.from(base);
  for (const o of ops) {
    switch (o.op) {
      case 'flip':
        if (o.at < buf.length) buf[o.at] = buf[o.at]! ^ o.mask;
        break;
      case 'set':
        for (let i = 0; i < o.bytes.length && o.at + i < buf.length; i++) buf[o.at + i] = o.bytes[i]!;
        break;
      case 'copy':
        if (o.from < buf.length && o.at < buf.length)
          buf.copy(buf, o.at, o.from, Math.min(buf.length, o.from + o.length));
        break;
      case 'truncate':
        buf = buf.subarray(0, Math.min(buf.length, o.length));
        break;
      case 'insert':
        buf = Buffer.concat([buf.subarray(0, o.at), Buffer.from(o.bytes), buf.subarray(o.at)]);
        break;
      case 'delete':
        buf = Buffer.concat([buf.subarray(0, o.at), buf.subarray(o.at + o.length)]);
        break;
    }
  }
  return buf;
}

/** Merged, sorted ranges (the reads a parser made of a clean seed), each grown to whole `align`-byte blocks. */
export function mergeRanges(ranges: readonly ByteRange[], align = 1): ByteRange[] {
  const sorted = ranges
    .map((r) => ({ start: Math.floor(r.start / align) * align, end: Math.ceil((r.start + r.length) / align) * align }))
    .sort((a, b) => a.start - b.start);
  const out: { start: number; end: number }[] = [];
  for (const r of sorted) {
    const last = out.at(-1);
    if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out.map((r) => ({ start: r.start, length: r.end - r.start }));
}
