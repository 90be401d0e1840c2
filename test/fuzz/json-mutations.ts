import fc from 'fast-check';
import type { TextInput, TextSeed } from './text-mutations.js';

/**
 * Structural mutations of a JSON document: a value somewhere in it replaced by another of
 * any type (or an edge value: huge numbers, empty and very long strings, deep nesting), a
 * key removed or added. Token mutations (text-mutations.ts) mostly break the syntax; these
 * keep it valid so the checks after JSON.parse get exercised.
 */
type Path = (string | number)[];
type JsonOp =
  | { op: 'replace'; path: number; value: unknown }
  | { op: 'remove'; path: number }
  | { op: 'add'; path: number; key: string; value: unknown };

const EDGE: unknown[] = [
  null,
  true,
  0,
  -1,
  1.5,
  2 ** 53,
  -(2 ** 63),
  1e308,
  '',
  ' ',
  'x'.repeat(5000),
  '\u0000',
  [],
  {},
  [[[[[[]]]]]],
  { a: { b: { c: {} } } },
  '__proto__',
];

function paths(v: unknown, at: Path = []): Path[] {
  const out: Path[] = [at];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...at, i])));
  else if (v !== null && typeof v === 'object')
    for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, k]));
  return out;
}

function apply(doc: unknown, all: Path[], ops: JsonOp[]): unknown {
  let root = structuredClone(doc);
  for (const o of ops) {
    const path = all[o.path % all.length]!;
    if (path.length === 0) {
      if (o.op === 'replace') root = structuredClone(o.value);
      continue;
    }
    let parent: unknown = root;
    for (const k of path.slice(0, -1)) parent = (parent as Record<string | number, unknown> | undefined)?.[k];
    if (parent === null || typeof parent !== 'object') continue;
    const last = path.at(-1)!;
    const p = parent as Record<string | number, unknown>;
    if (o.op === 'replace') p[last] = structuredClone(o.value);
    else if (o.op === 'remove') {
      if (Array.isArray(p)) p.splice(Number(last), 1);
      else delete p[last];
    } else {
      const target = p[last];
      if (Array.isArray(target)) target.push(structuredClone(o.value));
      else if (target !== null && typeof target === 'object')
        Object.defineProperty(target, o.key, {
          value: structuredClone(o.value),
          enumerable: true,
          configurable: true,
          writable: true,
        });
    }
  }
  return root;
}

export function jsonInputs(seeds: readonly TextSeed[], keys: readonly string[] = []): fc.Arbitrary<TextInput> {
  return fc.constantFrom(...seeds).chain((seed) => {
    const doc = JSON.parse(seed.text) as unknown;
    const all = paths(doc);
    const value = fc.oneof(
      { arbitrary: fc.constantFrom(...EDGE), weight: 2 },
      { arbitrary: fc.jsonValue({ maxDepth: 2 }), weight: 1 },
    );
    const path = fc.nat({ max: all.length - 1 });
    const op: fc.Arbitrary<JsonOp> = fc.oneof(
      { arbitrary: fc.record({ op: fc.constant('replace' as const), path, value }), weight: 4 },
      { arbitrary: fc.record({ op: fc.constant('remove' as const), path }), weight: 1 },
      {
        arbitrary: fc.record({
          op: fc.constant('add' as const),
          path,
          key: fc.constantFrom('__proto__', 'constructor', 'extra', ...keys),
          value,
        }),
        weight: 1,
      },
    );
    return fc
      .array(op, { minLength: 1, maxLength: 3 })
      .map((ops) => ({ seed: seed.name, text: JSON.stringify(apply(doc, all, ops)) }));
  });
}
