import { ZfsAdapterError } from './zfs-adapter-error.js';

/** What queryConnectionParameters declares; mamori fills `connection` with these. */
export const ZFS_CONNECTION_PARAMETERS = [
  {
    name: 'pools',
    description: 'The zpools this site\'s array covers, comma-separated (e.g. "tank" or "tank,fast").',
    required: true,
    secret: false,
  },
  {
    name: 'peerCommand',
    description:
      'A JSON array: the argv prefix that runs a command on the peer site\'s host, e.g. ["ssh","-oBatchMode=yes","root@site-b"]. Empty ([], the default) when the peer pools are on this host.',
    required: false,
    secret: false,
  },
] as const;

export interface ZfsConnection {
  pools: string[];
  peerCommand: string[];
}

/*
 * Pool and dataset names reach `zfs` as argv items, and through peerCommand (ssh joins
 * its arguments into one line for the remote shell) as words of a command line. So they
 * are held to characters no shell treats specially: the adapter never has to quote.
 */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,200}$/;

export function isSafeName(name: string): boolean {
  return NAME_RE.test(name) && !name.includes('..');
}

export function parseConnection(connection: Record<string, unknown>): ZfsConnection {
  const poolsText = connection['pools'];
  if (typeof poolsText !== 'string' || poolsText.trim() === '') {
    throw new ZfsAdapterError(
      'INVALID_REQUEST',
      'connection.pools is required: the zpools of this site, comma-separated',
    );
  }
  const pools = poolsText
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  for (const p of pools) {
    if (!isSafeName(p))
      throw new ZfsAdapterError('INVALID_REQUEST', `connection.pools: ${JSON.stringify(p)} is not a zpool name`, {
        pool: p,
      });
  }
  return { pools: [...new Set(pools)], peerCommand: parsePeerCommand(connection['peerCommand']) };
}

function parsePeerCommand(value: unknown): string[] {
  if (value === undefined || value === null || (typeof value === 'string' && value.trim() === '')) return [];
  let parsed: unknown = value;
  if (typeof value === 'string') {
    try {
      parsed = JSON.parse(value);
    } catch {
      throw new ZfsAdapterError(
        'INVALID_REQUEST',
        'connection.peerCommand must be a JSON array of strings, e.g. ["ssh","root@site-b"]',
      );
    }
  }
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string' && a !== '')) {
    throw new ZfsAdapterError(
      'INVALID_REQUEST',
      'connection.peerCommand must be a JSON array of non-empty strings, e.g. ["ssh","root@site-b"]',
    );
  }
  return parsed as string[];
}
