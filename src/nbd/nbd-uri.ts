import { isIP } from 'node:net';
import { posix } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';

/*
 * NBD URIs as the NBD project writes them down (NetworkBlockDevice/nbd doc/uri.md) and
 * qemu-img, nbdcopy and virt-v2v (-i disk nbd://...) accept them:
 *
 *   nbd://HOST[:PORT][/EXPORT]             TCP, plain
 *   nbds://HOST[:PORT][/EXPORT]            TCP, TLS
 *   nbd+unix:///[EXPORT]?socket=PATH       unix socket, plain
 *   nbds+unix:///[EXPORT]?socket=PATH      unix socket, TLS
 *
 * Parsed strictly, because a URI given through the API makes the site connect somewhere:
 * no user info, no fragment, no query on TCP forms and only `socket=` on unix ones, no vsock,
 * an absolute and normalized socket path, a port 1..65535, an export name NBD can carry (at
 * most 4096 bytes, no NUL). Anything else is refused with NBD_URI_INVALID, never guessed at.
 * The spec's optional query keys (tls-certificates, tls-psk-file, tls-verify-peer, ...) are
 * refused too: TLS material is given apart from the URI (`--tls-creds DIR`), so a URI never
 * names a host file.
 */

export const NBD_DEFAULT_PORT = 10809;
/** The NBD protocol's limit on export names (NBD_OPT_GO / NBD_OPT_EXPORT_NAME). */
const MAX_EXPORT_NAME = 4096;
const MAX_URI = 8192;
const SCHEMES = ['nbd', 'nbds', 'nbd+unix', 'nbds+unix'] as const;

interface NbdUriBase {
  /** TLS required (nbds, nbds+unix): the client starts TLS before anything else and never falls back. */
  tls: boolean;
  /** The export to open ('' is the server's default export). */
  exportName: string;
}

export interface NbdTcpUri extends NbdUriBase {
  transport: 'tcp';
  /** A DNS name or an IP address (IPv6 without brackets). */
  host: string;
  port: number;
}

export interface NbdUnixUri extends NbdUriBase {
  transport: 'unix';
  /** Absolute, normalized path of the server's socket on the host that connects. */
  socket: string;
}

export type NbdUri = NbdTcpUri | NbdUnixUri;

/** Whether text claims to be an NBD URI (so a caller never takes one for a file name). */
export function looksLikeNbdUri(text: string): boolean {
  return /^nbds?(\+[a-z]+)?:/i.test(text);
}

/** Parses an NBD URI or throws NBD_URI_INVALID saying what is wrong with it. */
export function parseNbdUri(text: unknown): NbdUri {
  if (typeof text !== 'string') throw invalid(text, 'it is not a string');
  if (text.length > MAX_URI) throw invalid(text, `it is longer than ${MAX_URI} characters`);
  // Control characters and spaces are refused outright: URL parsing would strip or encode some.
  if (/[\u0000-\u0020\u007f]/.test(text)) throw invalid(text, 'it holds spaces or control characters');
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(\?[^#]*)?(#.*)?$/.exec(text);
  if (!m) throw invalid(text, 'it is not SCHEME://AUTHORITY/EXPORT');
  const scheme = m[1]!.toLowerCase() as (typeof SCHEMES)[number];
  const authority = m[2]!;
  const path = m[3]!;
  const query = m[4];
  if (!(SCHEMES as readonly string[]).includes(scheme))
    throw invalid(text, `scheme ${scheme}:// is not one of ${SCHEMES.map((s) => `${s}://`).join(', ')}`);
  if (m[5] !== undefined) throw invalid(text, 'it has a fragment (#...)');
  if (authority.includes('@')) throw invalid(text, 'it has user information (user@host): NBD has no login');
  const tls = scheme.startsWith('nbds');
  const exportName = decodeExportName(text, path);
  if (scheme.endsWith('+unix')) {
    if (authority !== '')
      throw invalid(text, 'a unix socket URI has no host: write nbd+unix:///EXPORT?socket=PATH (three slashes)');
    return { transport: 'unix', tls, exportName, socket: socketFromQuery(text, query) };
  }
  if (query !== undefined)
    throw invalid(text, 'a TCP NBD URI takes no query (?...); TLS material is given with --tls-creds DIR');
  const { host, port } = hostAndPort(text, authority);
  return { transport: 'tcp', tls, exportName, host, port };
}

/** The URI back in canonical form (what logs and job contexts keep). */
export function formatNbdUri(u: NbdUri): string {
  const exp = u.exportName === '' ? '' : `/${encodeURIComponent(u.exportName)}`;
  if (u.transport === 'unix')
    return `nbd${u.tls ? 's' : ''}+unix://${exp || '/'}?socket=${encodeURIComponent(u.socket)}`;
  const host = isIP(u.host) === 6 ? `[${u.host}]` : u.host;
  return `nbd${u.tls ? 's' : ''}://${host}${u.port === NBD_DEFAULT_PORT ? '' : `:${u.port}`}${exp}`;
}

function hostAndPort(text: string, authority: string): { host: string; port: number } {
  const m = /^(\[([0-9A-Fa-f:.]+)\]|([^:[\]]*))(?::(\d*))?$/.exec(authority);
  if (!m) throw invalid(text, 'its host is not a name, an IPv4 address or a bracketed IPv6 address');
  let host: string;
  if (m[2] !== undefined) {
    host = m[2];
    if (isIP(host) !== 6) throw invalid(text, `[${host}] is not an IPv6 address`);
  } else {
    host = m[3]!.toLowerCase();
    if (host === '') throw invalid(text, 'it names no host (nbd://HOST[:PORT][/EXPORT])');
    if (isIP(host) === 0 && !isDnsName(host))
      throw invalid(text, `${JSON.stringify(host)} is not a host name or an IPv4 address`);
  }
  let port = NBD_DEFAULT_PORT;
  if (m[4] !== undefined) {
    if (!/^\d{1,5}$/.test(m[4])) throw invalid(text, 'its port is empty or not a number');
    port = Number(m[4]);
    if (port < 1 || port > 65535) throw invalid(text, `port ${port} is not 1 to 65535`);
  }
  return { host, port };
}

/** Letters, digits and hyphens in dot-separated labels of 1..63, at most 253 in all (RFC 1123). */
function isDnsName(host: string): boolean {
  if (host.length > 253) return false;
  // All-numeric dotted text that is no IPv4 address (1.2.3, 999.1.1.1) is refused, not resolved.
  if (/^[\d.]+$/.test(host)) return false;
  return host.split('.').every((l) => /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(l));
}

function decodeExportName(text: string, path: string): string {
  if (path === '' || path === '/') return '';
  let name: string;
  try {
    name = decodeURIComponent(path.slice(1));
  } catch {
    throw invalid(text, 'its export name has a bad percent-escape');
  }
  if (name.includes('\0')) throw invalid(text, 'its export name holds a NUL byte');
  if (Buffer.byteLength(name, 'utf8') > MAX_EXPORT_NAME)
    throw invalid(text, `its export name is longer than ${MAX_EXPORT_NAME} bytes`);
  return name;
}

function socketFromQuery(text: string, query: string | undefined): string {
  if (query === undefined) throw invalid(text, 'a unix socket URI needs ?socket=PATH');
  const pairs = query.slice(1).split('&');
  if (pairs.length !== 1 || !pairs[0]!.startsWith('socket=')) {
    throw invalid(
      text,
      'the only query a unix socket URI takes is socket=PATH (TLS material is given with --tls-creds DIR)',
    );
  }
  let socket: string;
  try {
    socket = decodeURIComponent(pairs[0]!.slice('socket='.length));
  } catch {
    throw invalid(text, 'its socket path has a bad percent-escape');
  }
  if (!posix.isAbsolute(socket)) throw invalid(text, 'its socket path is not absolute');
  if (socket.includes('\0')) throw invalid(text, 'its socket path holds a NUL byte');
  // A path with . or .. or doubled slashes is refused, so the path judged is the path typed.
  if (posix.normalize(socket) !== socket || socket.endsWith('/'))
    throw invalid(text, 'its socket path is not normalized (no ., .., // or trailing /)');
  // sun_path holds 108 bytes with its NUL.
  if (Buffer.byteLength(socket, 'utf8') > 107)
    throw invalid(text, 'its socket path is longer than a unix socket address takes (107 bytes)');
  return socket;
}

function invalid(given: unknown, why: string): MamoriError {
  const shown =
    typeof given === 'string' ? JSON.stringify(given.length > 200 ? `${given.slice(0, 200)}…` : given) : 'the source';
  return new MamoriError(
    'NBD_URI_INVALID',
    `${shown} is not an NBD URI mamori accepts: ${why}. Write nbd://HOST[:PORT][/EXPORT] or nbd+unix:///EXPORT?socket=PATH (nbds:// and nbds+unix:// for TLS)`,
    { details: { reason: why } },
  );
}
