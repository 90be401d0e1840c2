/**
 * The CLI's one door to the services: the commands that run here, without a site to call.
 * `serve` runs the site itself; inspect, verify-writelog, p2v-agent, `adapter test|schema` and
 * `compat search` read disks, images, adapters and the compatibility guide on this machine.
 * Every other command reaches the site only through its API (src/cli/api-client.ts), and the
 * layer rule in eslint.config.js holds src/cli/ to that: only src/cli/offline/ imports services.
 *
 * Each tool is loaded only when used: the server pulls in Fastify, SQLite and the rest, which
 * would otherwise add most of a second to every CLI call.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { MamoriError } from '../../core/mamori-error.js';

/** True when `cmd` is an offline tool (it has then run); false for a command of the API. */
export async function runOfflineTool(cmd: string, rest: string[], json: boolean): Promise<boolean> {
  switch (cmd) {
    case 'serve':
      await (await import('./serve-command.js')).serveCommand(rest);
      return true;
    case 'inspect':
      await (await import('./inspect-command.js')).inspectCommand(rest, json);
      return true;
    case 'p2v-agent':
      await (await import('./p2v-agent-command.js')).p2vAgentCommand(rest, json);
      return true;
    case 'adapter':
      await (await import('./adapter-command.js')).adapterCommand(rest, json);
      return true;
    case 'compat':
      // `compat check` asks the site about its arrays: an API command.
      if (rest[0] !== 'search') return false;
      await (await import('./compat-search-command.js')).compatSearchCommand(rest.slice(1), json);
      return true;
    case 'verify-writelog':
      await (await import('./verify-writelog-command.js')).verifyWritelogCommand(rest, json);
      return true;
    default:
      return false;
  }
}

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
 * For the parse-only mode (src/cli/parse-only.ts): checks an offline tool's arguments against its
 * own option table and runs nothing, since running it would start a server, an agent or a
 * conformance suite. True when `cmd` is an offline tool; false for a command of the API.
 */
export async function checkOfflineToolArgs(cmd: string, rest: string[]): Promise<boolean> {
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
