import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ApiClient } from './api-client.js';
import { run, type ParseOnlyMode } from './main.js';
import { MamoriError, isMamoriError } from '../core/mamori-error.js';

/** What a command parsed into: the first API call it would make, or none for a local command (or help). */
export interface ParsedCommand {
  request: { method: string; path: string; body: unknown } | null;
}

export type ParseOutcome = ({ ok: true } & ParsedCommand) | { ok: false; code: string; message: string };

/** Thrown by ParseOnlyApi at a command's first request: it parsed, and would call this. */
class ParsedRequest extends Error {
  readonly method: string;
  readonly path: string;
  readonly body: unknown;
  constructor(method: string, path: string, body: unknown) {
    super(`${method} ${path}`);
    this.method = method;
    this.path = path;
    this.body = body;
  }
}

/** An API client that sends nothing: the first request stops the command there. */
class ParseOnlyApi extends ApiClient {
  constructor() {
    super({ url: 'https://parse-only.invalid', token: 'parse-only' });
  }

  override request<T>(method: string, path: string, body?: unknown): Promise<T> {
    return Promise.reject(new ParsedRequest(method, path, body));
  }
}

/** How main.ts's run() is told to parse only: API calls go to `api`, local commands to `local`. */
const strict = (
  args: string[],
  options: NonNullable<ParseArgsConfig['options']>,
  positionals: number | 'any' = 0,
): void => {
  const r = parseArgs({ args, options, strict: true, allowPositionals: positionals !== 0 });
  if (positionals !== 'any' && r.positionals.length !== positionals)
    throw new MamoriError('INVALID_INPUT', `expected ${positionals} argument(s), got ${r.positionals.length}`);
};

/**
 * The commands that run in the CLI itself (no site): checked against their own option tables,
 * since running them would start a server, an agent or a conformance suite.
 */
async function parseLocal(cmd: string, rest: string[]): Promise<boolean> {
  switch (cmd) {
    case 'serve':
      strict(rest, (await import('./serve-command.js')).SERVE_OPTIONS);
      return true;
    case 'p2v-agent':
      strict(rest, (await import('./p2v-agent-command.js')).P2V_AGENT_OPTIONS);
      return true;
    case 'inspect':
    case 'verify-writelog':
      strict(rest, {}, 1);
      return true;
    case 'adapter': {
      const [sub, ...args] = rest;
      if (sub === 'test') strict(args, (await import('./adapter-command.js')).ADAPTER_TEST_OPTIONS, 1);
      else if (sub === 'schema') strict(args, {}, args.length <= 1 ? args.length : 1);
      else throw new MamoriError('INVALID_INPUT', `unknown adapter command ${JSON.stringify(sub ?? '')}`);
      return true;
    }
    case 'compat':
      if (rest[0] !== 'search') return false;
      strict(rest.slice(1), (await import('./compat-search-command.js')).COMPAT_SEARCH_OPTIONS);
      return true;
    default:
      return false;
  }
}

/**
 * Parses a command line as `mamori` would, without running anything: API commands run until
 * their first request, which is caught and returned; local commands only have their
 * arguments checked. For tests of the text that names commands (incident remedies, error
 * messages): a command the CLI would refuse comes back `ok: false` with its message.
 */
export async function parseCommand(argv: string[]): Promise<ParseOutcome> {
  const mode: ParseOnlyMode = { api: new ParseOnlyApi(), local: parseLocal };
  // Help text is not a parse result: keep it off the test's output.
  const write = process.stdout.write;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  try {
    await run(argv, mode);
    return { ok: true, request: null };
  } catch (e) {
    if (e instanceof ParsedRequest) return { ok: true, request: { method: e.method, path: e.path, body: e.body } };
    if (isMamoriError(e)) return { ok: false, code: e.code, message: e.message };
    // node:util parseArgs: ERR_PARSE_ARGS_UNKNOWN_OPTION, ..._INVALID_OPTION_VALUE, ..._UNEXPECTED_POSITIONAL.
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))
      return { ok: false, code, message: (e as Error).message };
    throw e;
  } finally {
    process.stdout.write = write;
  }
}
