import {
  ADAPTER_COMMANDS,
  PROTOCOL_VERSION,
  type AdapterCommand,
  type AdapterErrorBody,
  type AdapterResponse,
} from '../adapter-protocol.js';
import { ZfsAdapterError } from './zfs-adapter-error.js';
import { ZFS_HANDLERS, hostsOf, type CommandContext } from './zfs-adapter.js';
import { parseConnection } from './zfs-connection.js';

/*
 * The ZFS adapter's executable (adapters/zfs/mamori-adapter-zfs runs this): one JSON
 * request on stdin, exactly one JSON response on stdout, progress and free text on
 * stderr, exit 0 whenever a response was written (docs/adapters.md). Nothing but the
 * response ever reaches stdout; a stack trace goes to stderr, for the log.
 */

const MAX_REQUEST_BYTES = 1024 * 1024;
const QUERIES: readonly AdapterCommand[] = [
  'queryInfo',
  'queryCapabilities',
  'queryConnectionParameters',
  'queryErrorDefinitions',
];

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_REQUEST_BYTES)
      throw new ZfsAdapterError('INVALID_REQUEST', `the request is larger than ${MAX_REQUEST_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The request's shape, checked before anything runs; the command's own arguments too. */
function parseRequest(text: string): {
  command: AdapterCommand;
  connection: Record<string, unknown>;
  arrayId: string;
  deviceIds: string[];
} {
  let req: unknown;
  try {
    req = JSON.parse(text);
  } catch {
    throw new ZfsAdapterError('INVALID_REQUEST', 'stdin is not one JSON object');
  }
  if (!isRecord(req)) throw new ZfsAdapterError('INVALID_REQUEST', 'the request must be a JSON object');
  if (req['protocol'] !== PROTOCOL_VERSION)
    throw new ZfsAdapterError(
      'INVALID_REQUEST',
      `protocol ${JSON.stringify(req['protocol'])} is not supported; this adapter speaks protocol ${PROTOCOL_VERSION}`,
    );
  const command = req['command'];
  if (typeof command !== 'string') throw new ZfsAdapterError('INVALID_REQUEST', 'the request has no command');
  if (!(ADAPTER_COMMANDS as readonly string[]).includes(command))
    throw new ZfsAdapterError('UNKNOWN_COMMAND', `unknown command ${JSON.stringify(command)}`, { command });
  const connection = req['connection'] ?? {};
  const args = req['arguments'] ?? {};
  if (!isRecord(connection)) throw new ZfsAdapterError('INVALID_REQUEST', 'connection must be an object');
  if (!isRecord(args)) throw new ZfsAdapterError('INVALID_REQUEST', 'arguments must be an object');
  const cmd = command as AdapterCommand;
  let arrayId = '';
  let deviceIds: string[] = [];
  if (!QUERIES.includes(cmd) && cmd !== 'discoverArrays') {
    if (typeof args['arrayId'] !== 'string' || args['arrayId'] === '')
      throw new ZfsAdapterError('INVALID_REQUEST', `${cmd} needs arguments.arrayId`);
    arrayId = args['arrayId'];
    if (cmd !== 'discoverDevices') {
      const ids = args['deviceIds'];
      if (!Array.isArray(ids) || ids.length === 0 || !ids.every((i) => typeof i === 'string' && i !== '')) {
        throw new ZfsAdapterError(
          'INVALID_REQUEST',
          `${cmd} needs arguments.deviceIds, a non-empty array of device ids`,
        );
      }
      if (new Set(ids).size !== ids.length)
        throw new ZfsAdapterError('INVALID_REQUEST', 'arguments.deviceIds names a device twice');
      deviceIds = ids as string[];
    }
  }
  return { command: cmd, connection, arrayId, deviceIds };
}

async function respond(text: string): Promise<AdapterResponse> {
  const req = parseRequest(text);
  // The queries describe the adapter and need no connection (mamori asks them before it has one).
  const needsConnection = !QUERIES.includes(req.command);
  const conn = needsConnection ? parseConnection(req.connection) : { pools: [], peerCommand: [] };
  const ctx: CommandContext = { conn, hosts: hostsOf(conn), arrayId: req.arrayId, deviceIds: req.deviceIds };
  const handler = ZFS_HANDLERS[req.command] as (c: CommandContext) => Promise<unknown>;
  return { protocol: PROTOCOL_VERSION, result: await handler(ctx) };
}

function errorBody(e: unknown): AdapterErrorBody {
  if (e instanceof ZfsAdapterError)
    return e.details === undefined
      ? { code: e.code, message: e.message }
      : { code: e.code, message: e.message, details: e.details };
  process.stderr.write(`internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  return {
    code: 'INTERNAL',
    message: `the ZFS adapter failed unexpectedly: ${e instanceof Error ? e.message : String(e)}`,
  };
}

async function main(): Promise<void> {
  let response: AdapterResponse;
  try {
    response = await respond(await readStdin());
  } catch (e) {
    response = { protocol: PROTOCOL_VERSION, error: errorBody(e) };
  }
  // mamori reading stdout may be gone (killed, timed out); nothing more to do then.
  process.stdout.on('error', () => process.exit(0));
  process.stdout.write(`${JSON.stringify(response)}\n`, () => process.exit(0));
}

await main();
