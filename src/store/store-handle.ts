import type { Kysely } from 'kysely';
import type { Database } from './schema.js';

declare const brand: unique symbol;

/**
 * The open database as services hold it: they receive it at construction and hand it to the
 * repositories they build, and cannot query through it (it has no methods, and the database
 * behind it is reachable only from store/). This is what keeps every query in store/.
 */
export interface StoreHandle {
  readonly [brand]: 'StoreHandle';
}

// A WeakMap rather than a field on the handle: the handle is an empty frozen object, so not even
// a cast outside store/ finds the database on it.
const databases = new WeakMap<object, Kysely<Database>>();
const handles = new WeakMap<Kysely<Database>, StoreHandle>();

/** The handle of an open database; the same database always gives the same handle. */
export function storeHandle(db: Kysely<Database>): StoreHandle {
  let handle = handles.get(db);
  if (handle === undefined) {
    handle = Object.freeze({}) as StoreHandle;
    databases.set(handle, db);
    handles.set(db, handle);
  }
  return handle;
}

/**
 * The database behind a handle, for the repositories' constructors. store/ only: eslint.config.js
 * refuses this import anywhere else.
 */
export function unwrapStoreHandle(handle: StoreHandle): Kysely<Database> {
  const db = databases.get(handle);
  // Only a handle made by storeHandle() gets here through the types; anything else is a bug in
  // the caller, not a state a person can fix.
  if (db === undefined) throw new TypeError('not a StoreHandle made by storeHandle()');
  return db;
}
