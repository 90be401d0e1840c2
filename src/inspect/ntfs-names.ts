// ---------------------------------------------------------------------------------------------
// Names: NTFS compares names by upper-casing each UTF-16 code unit through the volume's $UpCase
// table. Upper-casing code unit by code unit with JavaScript's rules matches that table for
// everything a Windows installation path contains; lookups of non-ASCII names fall back to a
// full scan of that one directory in case the two tables disagree on ordering.

let upcaseTable: Uint16Array | undefined;

function upcaseUnit(unit: number): number {
  if (upcaseTable === undefined) {
    upcaseTable = new Uint16Array(0x10000);
    for (let u = 0; u < 0x10000; u++) {
      const upper = String.fromCharCode(u).toUpperCase();
      upcaseTable[u] = upper.length === 1 ? upper.charCodeAt(0) : u;
    }
  }
  return upcaseTable[unit] ?? unit;
}

export function compareNamesIgnoringCase(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = upcaseUnit(a.charCodeAt(i)) - upcaseUnit(b.charCodeAt(i));
    if (d !== 0) return d;
  }
  return a.length - b.length;
}
