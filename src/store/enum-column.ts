import { MamoriError } from '../core/mamori-error.js';

/**
 * A TEXT column that holds one of a fixed set of words (a state, a mode): read through this
 * instead of an `as` cast, so a row of another version is STORE_ROW_INVALID naming the column.
 */
export function enumColumn<T extends string>(column: string, allowed: readonly T[]): (text: string) => T {
  return (text) => {
    if ((allowed as readonly string[]).includes(text)) return text as T;
    throw new MamoriError(
      'STORE_ROW_INVALID',
      `the database column ${column} holds ${JSON.stringify(text)}, not one of ${allowed.join(', ')}; the row was written by something other than mamori, or by a newer version`,
      { details: { column } },
    );
  };
}
