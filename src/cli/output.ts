/** Human text by default, JSON with --json; one clear line for errors. */
export function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

export function printTable(rows: Record<string, unknown>[], columns: string[]): void {
  const cells = rows.map((r) => columns.map((c) => formatCell(r[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (vals: string[]): string =>
    vals
      .map((v, i) => v.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${line(columns.map((c) => c.toUpperCase()))}\n`);
  for (const row of cells) process.stdout.write(`${line(row)}\n`);
}

export function printFields(obj: Record<string, unknown>): void {
  const width = Math.max(...Object.keys(obj).map((k) => k.length));
  for (const [k, v] of Object.entries(obj)) process.stdout.write(`${k.padEnd(width)}  ${formatCell(v)}\n`);
}

function formatCell(v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

// The commands take it from here; the web console imports src/core/format-bytes.ts itself.
export { formatBytes } from '../core/format-bytes.js';

/** A progress bar on a terminal, a line per 10% otherwise (logs stay readable). */
export class ProgressBar {
  #label: string;
  #lastDecile = -1;
  #tty = process.stderr.isTTY === true;
  constructor(label: string) {
    this.#label = label;
  }
  update(fraction: number): void {
    const pct = Math.floor(fraction * 100);
    if (this.#tty) {
      const filled = Math.round(fraction * 30);
      process.stderr.write(`\r${this.#label} [${'#'.repeat(filled)}${' '.repeat(30 - filled)}] ${pct}%`);
    } else if (Math.floor(pct / 10) > this.#lastDecile) {
      this.#lastDecile = Math.floor(pct / 10);
      process.stderr.write(`${this.#label} ${pct}%\n`);
    }
  }
  done(): void {
    if (this.#tty) process.stderr.write('\n');
  }
}
