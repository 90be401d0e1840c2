/**
 * The "table.column" of a UNIQUE or PRIMARY KEY constraint an insert broke, or null for any
 * other error. Two requests that pass a "name is free" check together race to the insert;
 * the loser must get a 409 naming the conflict, not a 500. SQLite names the column only in
 * its message ("UNIQUE constraint failed: disks.name"), so that is what is read.
 */
export function uniqueViolation(e: unknown): string | null {
  const err = e as { code?: unknown; message?: unknown } | null;
  if (!err || (err.code !== 'SQLITE_CONSTRAINT_UNIQUE' && err.code !== 'SQLITE_CONSTRAINT_PRIMARYKEY')) return null;
  const m = /constraint failed: ([A-Za-z0-9_.]+)/.exec(String(err.message));
  return m?.[1] ?? '';
}
