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
  encode(value: T): string;
}

/** A codec for `column` (as "table.column") whose values match `schema` (a JSON schema object). */
export function jsonColumn<T>(column: string, schema: object): JsonColumn<T> {
  let validate: ValidateFunction | null = null;
  return {
    column,
    decode(text: string): T {
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
