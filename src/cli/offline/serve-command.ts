import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { writeFile, rm } from 'node:fs/promises';
import { openSite } from '../../main.js';
import { parseListen } from '../../serve-options.js';
import { MamoriError } from '../../core/mamori-error.js';
import { parseDatabaseUrl } from '../../store/postgres/database-url.js';

/** serve's options (also what src/cli/parse-only.ts checks a command against). */
export const SERVE_OPTIONS = {
  data: { type: 'string' },
  listen: { type: 'string' },
  name: { type: 'string' },
  'guest-dir': { type: 'string' },
  'insecure-http': { type: 'boolean' },
  // The site's database on PostgreSQL (postgresql://...); default: SQLite in the data folder.
  db: { type: 'string' },
  // Host paths API callers (admins) may name: RDM devices, images to import, export folders.
  'allow-device': { type: 'string', multiple: true },
  'allow-import': { type: 'string', multiple: true },
} as const;

/** `mamori serve`: runs one site until SIGINT/SIGTERM; VMs keep running after it stops. */
export async function serveCommand(argv: string[]): Promise<void> {
  // First of all: nothing the server writes may be readable by other users (openSite sets it
  // too, for the servers tests open in-process).
  process.umask(0o077);
  const { values } = parseArgs({ args: argv, strict: true, options: SERVE_OPTIONS });
  if (!values.data)
    throw new MamoriError(
      'INVALID_INPUT',
      'usage: mamori serve --data DIR [--db postgresql://...] [--listen HOST:PORT] [--name SITE] [--insecure-http] [--allow-device GLOB]... [--allow-import DIR]...',
    );
  const { host, port } = parseListen(values.listen ?? '127.0.0.1:8443');
  // MAMORI_DB keeps a URL with a password off the command line (ps shows argv to every user).
  const dbText = values.db ?? (process.env['MAMORI_DB'] || undefined);
  const database = dbText === undefined ? undefined : parseDatabaseUrl(dbText);
  const site = await openSite({
    dataDir: resolve(values.data),
    name: values.name ?? 'site-a',
    serverNames: [host],
    ...(values['guest-dir'] ? { guestDir: resolve(values['guest-dir']) } : {}),
    ...(values['insecure-http'] ? { insecureHttp: true } : {}),
    ...(database ? { databaseUrl: database.url } : {}),
    hostPaths: {
      devices: values['allow-device'] ?? [],
      importDirs: (values['allow-import'] ?? []).map((d) => resolve(d)),
    },
  });
  const url = await site.listen(host, port);
  await writeFile(site.paths.serverPid, `${process.pid}\n`);
  process.stderr.write(
    `mamori site ${values.name ?? 'site-a'} serving ${url} (data ${site.paths.root}; database ${database?.shown ?? site.paths.database})\n`,
  );
  if (values['insecure-http'])
    process.stderr.write(
      'WARNING: plain HTTP (--insecure-http): tokens cross the network in clear; for local development only\n',
    );
  process.stderr.write(`site CA SHA256 fingerprint ${site.tls.caFingerprint} (${site.paths.tlsDir}/ca-cert.pem)\n`);
  if (site.createdAdminToken) process.stderr.write(`admin token written to ${site.paths.adminToken}\n`);
  // Probe the accelerator now, so the first VM start does not pay for it.
  void site.host.probe().catch(() => undefined);
  await new Promise<void>((done) => {
    const stop = (): void => {
      void site
        .close()
        .then(() => rm(site.paths.serverPid, { force: true }))
        .finally(done);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
