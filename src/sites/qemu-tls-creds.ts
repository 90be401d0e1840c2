import { chmod, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseCert } from './cert-fingerprint.js';
import type { SiteTls } from './site-tls.js';

export type QemuTlsEndpoint = 'server' | 'client' | 'both';

/**
 * Writes a directory in the layout QEMU's `tls-creds-x509` object reads (`dir=`), for NBD
 * over TLS between this site and one peer:
 *
 *   ca-cert.pem       the peer's CA, then this site's own CA
 *   server-cert.pem   this site's server certificate and key   (endpoint server|both)
 *   server-key.pem
 *   client-cert.pem   this site's client certificate and key   (endpoint client|both)
 *   client-key.pem
 *
 * Why both CAs in ca-cert.pem: QEMU (crypto/tlscredsx509.c, sanity check at load) verifies
 * its *own* certificate against ca-cert.pem and refuses to start with "Our own certificate
 * ... failed validation ... hasn't got a known issuer" if only the peer's CA is there. With
 * both, a QEMU server with verify-peer=on accepts client certificates from the peer's CA
 * (and from our own CA, which signs nothing but our own certificates). To admit exactly one
 * peer, add a tls-authz object naming its client subject, "CN=PEER,OU=client,O=mamori".
 *
 * The server certificate names the site's listen address (and loopback): an NBD client
 * checks the host it dials against it unless told a tls-hostname.
 *
 * No dh-params.pem: QEMU 7.2 with GnuTLS 3.7 starts without one in well under a second.
 * Keys are mode 0600 in a 0700 folder; files are replaced by rename, so a QEMU that reads
 * the folder never sees half a file.
 */
export async function writeQemuTlsCreds(opts: {
  dir: string;
  site: SiteTls;
  peerCaPem: string;
  endpoint: QemuTlsEndpoint;
}): Promise<string> {
  const { dir, site, endpoint } = opts;
  parseCert(opts.peerCaPem, "peer's CA certificate");
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const files: [string, string, number][] = [
    ['ca-cert.pem', `${opts.peerCaPem.trim()}\n${site.caCertPem.trim()}\n`, 0o644],
  ];
  if (endpoint !== 'client')
    files.push(['server-cert.pem', site.serverCertPem, 0o644], ['server-key.pem', site.serverKeyPem, 0o600]);
  if (endpoint !== 'server')
    files.push(['client-cert.pem', site.clientCertPem, 0o644], ['client-key.pem', site.clientKeyPem, 0o600]);
  for (const [name, text, mode] of files) {
    const tmp = join(dir, `.${name}.new`);
    await rm(tmp, { force: true });
    await writeFile(tmp, text, { mode, flag: 'wx' });
    await rename(tmp, join(dir, name));
  }
  return dir;
}
