import { ApiClient } from './api-client.js';
import { run, type ParseOnlyMode } from './main.js';
import { isMamoriError } from '../core/mamori-error.js';
import { checkOfflineToolArgs } from './offline/offline-tools.js';

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

/**
 * Parses a command line as `mamori` would, without running anything: API commands run until
 * their first request, which is caught and returned; local commands only have their
 * arguments checked. For tests of the text that names commands (incident remedies, error
 * messages): a command the CLI would refuse comes back `ok: false` with its message.
 */
export async function parseCommand(argv: string[]): Promise<ParseOutcome> {
  const mode: ParseOnlyMode = { api: new ParseOnlyApi(), local: checkOfflineToolArgs };
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
