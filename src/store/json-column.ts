import { Ajv, type ValidateFunction } from 'ajv';
import { MamoriError } from '../core/mamori-error.js';

// The named export: the same class under Node's ESM and a bundler's resolution (the web console
// type-checks this file through the plan types it imports), where the default export differs.
const ajv = new Ajv({ allErrors: true, strict: false });

/**
 * One JSON text column, read and written in one place (issue 20: no `as` casts on parsed rows).
 * `decode` parses and validates against the column's JSON schema: a row that does not match is
 * STORE_ROW_INVALID naming the column, never a value of the wrong shape passed on. Repositories
 * in store/repos/ declare one codec per column and use it for every read and write.
 */
export interface JsonColumn<T> {
  readonly column: string;
  decode(text: string): T;
  /**
   * `decode` for read-only callers (the API's big lists): the value of a text seen before comes
   * from a cache keyed by the text itself, so an unchanged row is neither parsed nor validated
   * again, and a changed row is a new key. The value is shared and deeply frozen: a caller that
   * changes it throws rather than corrupting the next reader's copy.
   */
  decodeShared(text: string): T;
  encode(value: T): string;
}

/**
 * Texts a column's shared cache holds: above a 1,000-VM site's rows, and a few MB at most. When
 * full, the oldest entry goes (a row changed since is a new key; its old text is never asked again).
 */
const SHARED_CACHE_ENTRIES = 20_000;

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/** A codec for `column` (as "table.column") whose values match `schema` (a JSON schema object). */
export function jsonColumn<T>(column: string, schema: object): JsonColumn<T> {
  let validate: ValidateFunction | null = null;
  const decode = (text: string): T => {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new MamoriError(
        'STORE_ROW_INVALID',
        `the database column ${column} holds text that is not JSON (${(e as Error).message}); the row was written by something other than mamori, or the file is damaged`,
        { details: { column } },
      );
    }
    validate ??= ajv.compile(schema);
    if (!validate(value)) {
      throw new MamoriError(
        'STORE_ROW_INVALID',
        `the database column ${column} holds a value of the wrong shape: ${ajv.errorsText(validate.errors)}; the row was written by something other than mamori, or by a newer version`,
        { details: { column, errors: validate.errors } },
      );
    }
    return value as T;
  };
  const shared = new Map<string, T>();
  return {
    column,
    decode,
    decodeShared(text: string): T {
      let value = shared.get(text);
      if (value === undefined) {
        value = deepFreeze(decode(text));
        if (shared.size >= SHARED_CACHE_ENTRIES) shared.delete(shared.keys().next().value!);
        shared.set(text, value);
      }
      return value;
    },
    encode(value: T): string {
      return JSON.stringify(value);
    },
  };
}

/**
 * A JSON value's shape checked where it is not a column of its own (a job kind's context, read
 * from jobs.context and upgraded first): `check` is `decode` without the parse.
 */
export interface JsonShape<T> {
  readonly name: string;
  check(value: unknown): T;
}

export function jsonShape<T>(name: string, schema: object): JsonShape<T> {
  let validate: ValidateFunction | null = null;
  return {
    name,
    check(value: unknown): T {
      validate ??= ajv.compile(schema);
      if (!validate(value))
        throw new MamoriError(
          'STORE_ROW_INVALID',
          `${name} has the wrong shape: ${ajv.errorsText(validate.errors)}; it was written by something other than this version of mamori`,
          { details: { column: name, errors: validate.errors } },
        );
      return value as T;
    },
  };
}
