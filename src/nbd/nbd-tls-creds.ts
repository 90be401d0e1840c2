import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';

/** TLS material for connecting to an NBD server, as PEM text (what the API carries). */
export interface NbdTlsMaterial {
  /** CA certificate(s) the server's certificate must chain to. */
  ca: string;
  /** Client certificate and key, for servers that verify peers (both or neither). */
  cert?: string;
  key?: string;
}

/**
 * Reads a folder in the layout of QEMU's tls-creds-x509 client object: ca-cert.pem, and
 * client-cert.pem with client-key.pem when the server verifies peers. The same folder then
 * works for `qemu-img --object tls-creds-x509,dir=DIR,endpoint=client`, nbdcopy and mamori,
 * and the key never appears in a command line (where `ps` would show it).
 */
export async function readTlsCredsDir(dir: string): Promise<NbdTlsMaterial> {
  const read = (name: string): Promise<string | undefined> =>
    readFile(join(dir, name), 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw new MamoriError('INVALID_INPUT', `cannot read ${join(dir, name)}: ${e.message}`, { cause: e });
    });
  const ca = await read('ca-cert.pem');
  if (ca === undefined)
    throw new MamoriError(
      'INVALID_INPUT',
      `--tls-creds ${dir} holds no ca-cert.pem: give a folder laid out as QEMU's tls-creds-x509 (ca-cert.pem, and client-cert.pem with client-key.pem if the server verifies clients)`,
    );
  const cert = await read('client-cert.pem');
  const key = await read('client-key.pem');
  if ((cert === undefined) !== (key === undefined))
    throw new MamoriError(
      'INVALID_INPUT',
      `--tls-creds ${dir} holds ${cert ? 'client-cert.pem without client-key.pem' : 'client-key.pem without client-cert.pem'}: give both or neither`,
    );
  return { ca, ...(cert !== undefined ? { cert, key: key! } : {}) };
}
