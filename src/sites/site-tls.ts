import { chmod, mkdir, readFile } from 'node:fs/promises';
import { createPrivateKey, type X509Certificate } from 'node:crypto';
import { hostname, networkInterfaces } from 'node:os';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { certFingerprint, parseCert } from './cert-fingerprint.js';
import { createSiteCa, issueSiteCert, TLS_FILES, type LeafKind } from './site-ca.js';

/** A site's TLS material, loaded in memory: what Fastify serves and what peers pin. */
export interface SiteTls {
  dir: string;
  caCertPem: string;
  /** SHA-256 of the CA certificate, AB:CD:...: what an operator compares between sites. */
  caFingerprint: string;
  serverCertPem: string;
  serverKeyPem: string;
  clientCertPem: string;
  clientKeyPem: string;
  /** The names and addresses in the server certificate. */
  serverNames: string[];
  /** What this start had to make: [] on a restart with everything valid. */
  created: ('ca' | LeafKind)[];
}

/** Leaves are reissued (by the same CA) this long before they expire, at server start. */
const RENEW_BEFORE_MS = 30 * 24 * 3600_000;

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '']);

/**
 * The names a server certificate covers: loopback always, plus the listen address. For a
 * wildcard listen address that is every address of the host and its host name, since a
 * peer may reach the site through any of them.
 */
export function serverNamesFor(listenHosts: readonly string[]): string[] {
  const names = new Set<string>(['localhost', '127.0.0.1', '::1']);
  for (const h of listenHosts) {
    if (!WILDCARD_HOSTS.has(h)) {
      names.add(h);
      continue;
    }
    for (const list of Object.values(networkInterfaces())) {
      for (const a of list ?? []) if (!a.address.includes('%')) names.add(a.address);
    }
    if (/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(hostname())) names.add(hostname());
  }
  return [...names];
}

/**
 * Makes the site's CA and certificates at first start, and on later starts keeps what is
 * still good: the CA is only made again if its key or certificate is missing or the two
 * do not match (peers pin it, so it must not change lightly). The server certificate is
 * reissued when it does not cover a wanted name (the listen address changed), was not
 * signed by this CA, or expires within 30 days; the client certificate likewise.
 */
export async function ensureSiteTls(opts: {
  dir: string;
  siteName: string;
  serverNames?: readonly string[];
}): Promise<SiteTls> {
  const { dir, siteName } = opts;
  const wanted = opts.serverNames ?? serverNamesFor([]);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const created: SiteTls['created'] = [];

  let ca = await loadPair(dir, TLS_FILES.caCert, TLS_FILES.caKey);
  if (!ca || !ca.cert.ca || !ca.cert.verify(ca.cert.publicKey)) {
    await createSiteCa(dir, siteName);
    created.push('ca');
    ca = await loadPair(dir, TLS_FILES.caCert, TLS_FILES.caKey);
    if (!ca) throw new Error(`the site CA just written to ${dir} cannot be read back`);
  }
  const caCert = ca.cert;

  const leafOk = (leaf: Loaded | undefined, names: readonly string[]): leaf is Loaded =>
    !!leaf &&
    leaf.cert.checkIssued(caCert) &&
    leaf.cert.verify(caCert.publicKey) &&
    Date.parse(leaf.cert.validTo) - Date.now() > RENEW_BEFORE_MS &&
    names.every((n) => covers(leaf.cert, n));

  let server = await loadPair(dir, TLS_FILES.serverCert, TLS_FILES.serverKey);
  if (!leafOk(server, wanted)) {
    await issueSiteCert(dir, { kind: 'server', siteName, names: wanted });
    created.push('server');
    server = await loadPair(dir, TLS_FILES.serverCert, TLS_FILES.serverKey);
  }
  let client = await loadPair(dir, TLS_FILES.clientCert, TLS_FILES.clientKey);
  if (!leafOk(client, [])) {
    await issueSiteCert(dir, { kind: 'client', siteName });
    created.push('client');
    client = await loadPair(dir, TLS_FILES.clientCert, TLS_FILES.clientKey);
  }
  if (!server || !client) throw new Error(`the site certificates just written to ${dir} cannot be read back`);
  return {
    dir,
    caCertPem: ca.certPem,
    caFingerprint: certFingerprint(caCert),
    serverCertPem: server.certPem,
    serverKeyPem: server.keyPem,
    clientCertPem: client.certPem,
    clientKeyPem: client.keyPem,
    serverNames: [...wanted],
    created,
  };
}

interface Loaded {
  cert: X509Certificate;
  certPem: string;
  keyPem: string;
}

/** A certificate and its key, or undefined when either is missing, unreadable or they do not match. */
async function loadPair(dir: string, certFile: string, keyFile: string): Promise<Loaded | undefined> {
  try {
    const [certPem, keyPem] = await Promise.all([
      readFile(join(dir, certFile), 'utf8'),
      readFile(join(dir, keyFile), 'utf8'),
    ]);
    const cert = parseCert(certPem);
    if (!cert.checkPrivateKey(createPrivateKey(keyPem))) return undefined;
    return { cert, certPem, keyPem };
  } catch {
    return undefined;
  }
}

function covers(cert: X509Certificate, name: string): boolean {
  return isIP(name) ? cert.checkIP(name) !== undefined : cert.checkHost(name, { subject: 'never' }) !== undefined;
}
