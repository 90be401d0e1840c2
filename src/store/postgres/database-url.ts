import { MamoriError } from '../../core/mamori-error.js';
import { maskUrl } from '../../core/mask-url.js';

/** A PostgreSQL connection URL, checked, with the form of it that may be shown. */
export interface DatabaseUrl {
  /** The URL as given (with its password): only ever handed to the driver. */
  url: string;
  /** The URL with its password and query values masked (logs, errors, output). */
  shown: string;
  database: string;
}

/**
 * Checks a `--db` / MAMORI_DB value: postgresql:// (or postgres://) with a database name.
 * The socket folder of a local server goes in `?host=/run/postgresql`; a password may also
 * come from PGPASSWORD or ~/.pgpass, which keeps it off the command line.
 */
export function parseDatabaseUrl(text: string): DatabaseUrl {
  const shown = maskUrl(text);
  let u: URL;
  try {
    u = new URL(text.trim());
  } catch {
    // Not echoed: what does not parse cannot be masked with certainty (it may be all password).
    throw new MamoriError(
      'INVALID_INPUT',
      '--db: not a URL; expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE',
    );
  }
  if (u.protocol !== 'postgresql:' && u.protocol !== 'postgres:') {
    throw new MamoriError(
      'INVALID_INPUT',
      `--db: only PostgreSQL URLs are supported (postgresql://...), not ${u.protocol}//; without --db the site uses SQLite in its data folder`,
    );
  }
  let database: string;
  try {
    database = decodeURIComponent(u.pathname.replace(/^\//, ''));
  } catch {
    throw new MamoriError('INVALID_INPUT', `--db: the database name in ${shown} is not valid percent-encoding`);
  }
  if (database === '' || database.includes('/')) {
    throw new MamoriError(
      'INVALID_INPUT',
      `--db: name the database in the URL's path, e.g. postgresql://mamori@db.example/mamori (got ${shown})`,
    );
  }
  if (u.hostname === '' && !u.searchParams.has('host')) {
    throw new MamoriError(
      'INVALID_INPUT',
      `--db: name the server: a host (postgresql://USER@HOST/DB) or a socket folder (?host=/run/postgresql); got ${shown}`,
    );
  }
  return { url: text.trim(), shown, database };
}
