/** Characters of a caller's value quoted in a message: enough to recognise it, never the whole of a huge one. */
export const QUOTE_CHARS = 64;

/** A caller's value for a message: text quoted and cut at QUOTE_CHARS, anything else described by its kind. */
export function quote(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(short(v));
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  if (Array.isArray(v)) return `a list of ${v.length}`;
  if (v === undefined) return 'nothing';
  return typeof v === 'object' ? 'a mapping' : `a ${typeof v}`;
}

/** A name for a message, unquoted, cut at QUOTE_CHARS. */
export function short(s: string, max: number = QUOTE_CHARS): string {
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
