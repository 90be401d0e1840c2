import { chmod, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { runProcess } from '../core/run-process.js';
import { MamoriError } from '../core/mamori-error.js';

/**
 * File names inside DATA/tls/. They are QEMU's tls-creds-x509 names on purpose, so the
 * layout reads the same everywhere (qemu-tls-creds.ts builds QEMU's own directories).
 */
export const TLS_FILES = {
  caKey: 'ca-key.pem',
  caCert: 'ca-cert.pem',
  serverKey: 'server-key.pem',
  serverCert: 'server-cert.pem',
  clientKey: 'client-key.pem',
  clientCert: 'client-cert.pem',
} as const;

export type LeafKind = 'server' | 'client';

export const CA_DAYS = 3650;
export const LEAF_DAYS = 825;

/*
 * The extensions are what both OpenSSL (Node's https) and GnuTLS (QEMU's tls-creds-x509
 * sanity checks) want: the CA is CA:TRUE with keyCertSign; leaves are CA:FALSE with
 * digitalSignature + keyEncipherment (QEMU refuses a critical keyUsage without them, even
 * for EC keys) and one extendedKeyUsage each, serverAuth or clientAuth.
 * The config is ours alone (-config), so nothing from /etc/ssl/openssl.cnf leaks in.
 */
function opensslConfig(sans: string[]): string {
  return `[req]
distinguished_name = dn
prompt = no
[dn]
CN = mamori
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
${sans.length ? `subjectAltName = ${sans.join(', ')}` : ''}
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;
}

/** `DNS:name` or `IP:addr` entries; names outside a safe alphabet are refused, not quoted. */
export function subjectAltNames(names: readonly string[]): string[] {
  return names.map((n) => {
    if (isIP(n)) return `IP:${n}`;
    if (!/^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(n)) {
      throw new MamoriError(
        'INVALID_INPUT',
        `${JSON.stringify(n)} cannot go in a certificate as a host name: use letters, digits, '.' and '-'`,
      );
    }
    return `DNS:${n}`;
  });
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'] as const;

function serial(): string {
  // Positive 127-bit serial, as RFC 5280 asks (unique per CA, at most 20 octets).
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return `0x${b.toString('hex')}`;
}

/**
 * Runs openssl in a private scratch folder inside `dir` and moves the results into place
 * with rename(2), so a crash never leaves a half-written key or certificate under its real
 * name. Keys and certificates are mode 0600: certificates are public, but the data folder
 * keeps one rule (nothing in it for other users), and the CLI reads them as the site's user.
 */
async function inScratch(
  dir: string,
  sans: string[],
  fn: (tmp: string, cfg: string) => Promise<{ key: string; cert: string }>,
): Promise<void> {
  const tmp = await mkdtemp(join(dir, '.new-'));
  try {
    const cfg = join(tmp, 'openssl.cnf');
    await writeFile(cfg, opensslConfig(sans), { mode: 0o600 });
    const { key, cert } = await fn(tmp, cfg);
    await chmod(join(tmp, key), 0o600);
    await chmod(join(tmp, cert), 0o600);
    // Key first: a certificate under its real name always has its key beside it.
    await rename(join(tmp, key), join(dir, key));
    await rename(join(tmp, cert), join(dir, cert));
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

function openssl(args: string[]): Promise<unknown> {
  return runProcess('openssl', args, { timeoutMs: 30_000 });
}

/** A new self-signed site CA (EC P-256), replacing any in `dir`. */
export async function createSiteCa(dir: string, siteName: string, days = CA_DAYS): Promise<void> {
  await inScratch(dir, [], async (tmp, cfg) => {
    await openssl([
      'req',
      '-x509',
      '-config',
      cfg,
      '-extensions',
      'ca_ext',
      ...EC_KEY,
      '-keyout',
      join(tmp, TLS_FILES.caKey),
      '-out',
      join(tmp, TLS_FILES.caCert),
      '-days',
      String(days),
      '-set_serial',
      serial(),
      '-subj',
      `/O=mamori/OU=site CA/CN=mamori site CA ${siteName}`,
    ]);
    return { key: TLS_FILES.caKey, cert: TLS_FILES.caCert };
  });
}

/**
 * A server or client certificate for the site, signed by the CA in `dir`. The subject is
 * `O=mamori, OU=server|client, CN=SITE`, so a QEMU tls-authz list can name a peer's client.
 */
export async function issueSiteCert(
  dir: string,
  opts: { kind: LeafKind; siteName: string; names?: readonly string[]; days?: number },
): Promise<void> {
  const sans = opts.kind === 'server' ? subjectAltNames(opts.names ?? []) : [];
  const key = opts.kind === 'server' ? TLS_FILES.serverKey : TLS_FILES.clientKey;
  const cert = opts.kind === 'server' ? TLS_FILES.serverCert : TLS_FILES.clientCert;
  await inScratch(dir, sans, async (tmp, cfg) => {
    const csr = join(tmp, `${opts.kind}.csr`);
    await openssl([
      'req',
      '-new',
      '-config',
      cfg,
      ...EC_KEY,
      '-keyout',
      join(tmp, key),
      '-out',
      csr,
      '-subj',
      `/O=mamori/OU=${opts.kind}/CN=${opts.siteName}`,
    ]);
    await openssl([
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      join(dir, TLS_FILES.caCert),
      '-CAkey',
      join(dir, TLS_FILES.caKey),
      '-set_serial',
      serial(),
      '-days',
      String(opts.days ?? LEAF_DAYS),
      '-extfile',
      cfg,
      '-extensions',
      `${opts.kind}_ext`,
      '-out',
      join(tmp, cert),
    ]);
    return { key, cert };
  });
}
