import { MamoriError } from './mamori-error.js';
import { quote, short } from './quote-input.js';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/**
 * Names of VMs, disks and sites become file names and command-line values, so they
 * are held to a safe alphabet: no slashes, no leading dot, no "..".
 */
export function assertValidName(kind: string, name: unknown): asserts name is string {
  if (typeof name !== 'string' || !NAME_RE.test(name) || name.includes('..')) {
    throw new MamoriError(
      'INVALID_NAME',
      `invalid ${kind} name ${quote(name)}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit`,
      // Never the whole of a huge value: the answer stays small whatever was sent.
      { details: { kind, name: typeof name === 'string' ? short(name) : quote(name) } },
    );
  }
}

/** Parses sizes such as 64M, 20G, 512k or a plain byte count. */
export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (Number.isSafeInteger(text) && text > 0) return text;
  } else {
    const m = /^(\d+)\s*([kKmMgGtT]?)(i?[bB])?$/.exec(text.trim());
    if (m) {
      const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase()] ?? 1;
      const v = Number(m[1]) * mult;
      if (Number.isSafeInteger(v) && v > 0) return v;
    }
  }
  throw new MamoriError(
    'INVALID_INPUT',
    `invalid size ${JSON.stringify(text)}: give bytes or a number with K, M, G or T (e.g. 64M)`,
  );
}
