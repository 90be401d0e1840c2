/**
 * The "table.column" of a UNIQUE or PRIMARY KEY constraint an insert broke, or null for any
 * other error. Two requests that pass a "name is free" check together race to the insert;
 * the loser must get a 409 naming the conflict, not a 500. SQLite names the column only in
 * its message ("UNIQUE constraint failed: disks.name"), so that is what is read; PostgreSQL
 * (SQLSTATE 23505) gives the table and, in its detail, the key's columns ("Key (name)=(x)
 * already exists."). A key of several columns is named by its first, on both.
 */
export function uniqueViolation(e: unknown): string | null {
  const err = e as { code?: unknown; message?: unknown; table?: unknown; detail?: unknown } | null;
  if (!err) return null;
  if (err.code === '23505') {
    const column = /^Key \(([A-Za-z0-9_]+)/.exec(String(err.detail ?? ''))?.[1];
    return typeof err.table === 'string' && column !== undefined ? `${err.table}.${column}` : '';
  }
  if (err.code !== 'SQLITE_CONSTRAINT_UNIQUE' && err.code !== 'SQLITE_CONSTRAINT_PRIMARYKEY') return null;
  const m = /constraint failed: ([A-Za-z0-9_.]+)/.exec(String(err.message));
  return m?.[1] ?? '';
}
