import { formatBytes } from '../../../src/core/format-bytes.js';

/** Display helpers: operators read seconds, sizes and "how long ago" at a glance. */
export function seconds(s: number | null | undefined): string {
  if (s === null || s === undefined) return '-';
  if (s < 120) return `${Math.round(s * 10) / 10} s`;
  if (s < 7200) return `${Math.round(s / 6) / 10} min`;
  return `${Math.round(s / 360) / 10} h`;
}

export function bytes(n: number | null | undefined): string {
  return n === null || n === undefined ? '-' : formatBytes(n);
}

export function ago(iso: string | null | undefined): string {
  if (!iso) return 'never';
  return `${seconds((Date.now() - Date.parse(iso)) / 1000)} ago`;
}

export function time(iso: string | null | undefined): string {
  return iso ? new Date(iso).toLocaleString() : '-';
}
