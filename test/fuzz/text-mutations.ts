import fc from 'fast-check';

/**
 * Token-level mutations of a real text input (YAML, XML, JSON, LVM metadata): the text is
 * split into words, numbers, runs of space and single punctuation marks; a mutation deletes,
 * repeats, swaps or replaces tokens (with tokens of the same text or of a per-format
 * dictionary of troublemakers), or cuts the text short.
 */
export interface TextSeed {
  name: string;
  text: string;
  tokens: string[];
}
export interface TextInput {
  seed: string;
  text: string;
}

const GENERIC = [
  '',
  ' ',
  '\n',
  '\t',
  '\0',
  '"',
  "'",
  '\\',
  '-1',
  '0',
  '-0',
  '1e309',
  'NaN',
  'Infinity',
  '99999999999999999999',
  '4294967296',
  '9007199254740993',
  '0x7fffffff',
  '-2147483649',
  'null',
  'true',
  '{',
  '}',
  '[',
  ']',
  ':',
  '=',
  ',',
  '#',
  '\u00ff',
  '\ud800',
  '😀',
  'a'.repeat(300),
  '__proto__',
  'constructor',
  'toString',
];

export function textSeed(name: string, text: string): TextSeed {
  return { name, text, tokens: tokenize(text) };
}

export function tokenize(text: string): string[] {
  return text.match(/\s+|[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]/g) ?? [];
}

type TextOp =
  | { op: 'delete'; at: number; count: number }
  | { op: 'repeat'; at: number; count: number; times: number }
  | { op: 'replace'; at: number; token: string }
  | { op: 'insert'; at: number; token: string }
  | { op: 'swap'; at: number; other: number }
  | { op: 'cut'; at: number };

export function textInputs(
  seeds: readonly TextSeed[],
  dictionary: readonly string[] = [],
  maxOps = 4,
): fc.Arbitrary<TextInput> {
  return fc.constantFrom(...seeds).chain((seed) => {
    const n = Math.max(1, seed.tokens.length);
    const at = fc.nat({ max: n - 1 });
    const token = fc.oneof(
      { arbitrary: fc.constantFrom(...GENERIC, ...dictionary), weight: 3 },
      { arbitrary: seed.tokens.length > 0 ? fc.constantFrom(...seed.tokens) : fc.constant('x'), weight: 3 },
      { arbitrary: fc.string({ maxLength: 8 }), weight: 1 },
    );
    const op: fc.Arbitrary<TextOp> = fc.oneof(
      fc.record({ op: fc.constant('delete' as const), at, count: fc.integer({ min: 1, max: 8 }) }),
      fc.record({
        op: fc.constant('repeat' as const),
        at,
        count: fc.integer({ min: 1, max: 8 }),
        times: fc.integer({ min: 1, max: 4 }),
      }),
      fc.record({ op: fc.constant('replace' as const), at, token }),
      fc.record({ op: fc.constant('replace' as const), at, token }),
      fc.record({ op: fc.constant('insert' as const), at, token }),
      fc.record({ op: fc.constant('swap' as const), at, other: at }),
      fc.record({ op: fc.constant('cut' as const), at }),
    );
    return fc
      .array(op, { minLength: 1, maxLength: maxOps })
      .map((ops) => ({ seed: seed.name, text: applyTextOps(seed.tokens, ops) }));
  });
}

function applyTextOps(source: readonly string[], ops: readonly TextOp[]): string {
  let t = [...source];
  for (const o of ops) {
    const at = Math.min(o.at, Math.max(0, t.length - 1));
    switch (o.op) {
      case 'delete':
        t.splice(at, o.count);
        break;
      case 'repeat': {
        const run = t.slice(at, at + o.count);
        for (let i = 0; i < o.times; i++) t.splice(at, 0, ...run);
        break;
      }
      case 'replace':
        t[at] = o.token;
        break;
      case 'insert':
        t.splice(at, 0, o.token);
        break;
      case 'swap': {
        const other = Math.min(o.other, Math.max(0, t.length - 1));
        [t[at], t[other]] = [t[other] ?? '', t[at] ?? ''];
        break;
      }
      case 'cut':
        t = t.slice(0, at);
        break;
    }
  }
  return t.join('');
}
