import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { MamoriError } from '../core/mamori-error.js';
import { printJson } from './output.js';
import { adapterPath } from '../adapters/bundled-adapters.js';
import { conformanceTable, runConformance, type ConformanceConfig } from '../adapters/conformance-suite.js';
import { ADAPTER_COMMANDS, RESPONSE_SCHEMA, RESULT_SCHEMAS, type AdapterCommand } from '../adapters/adapter-protocol.js';

export const ADAPTER_USAGE = `mamori adapter <command>        storage adapters (docs/adapters.md)
  test PATH|NAME --config FILE        the conformance suite: the whole lifecycle against two scratch
                                      arrays FILE describes; prints a pass/fail table
  schema [COMMAND]                    the protocol's JSON schemas (all, or one command's result)`;

/** Runs in the CLI itself: an adapter is tested where it runs, no site server needed. */
export async function adapterCommand(rest: string[], json: boolean): Promise<void> {
  const [sub, ...args] = rest;
  const usage = (what: string): MamoriError => new MamoriError('INVALID_INPUT', `usage: mamori adapter ${what}\n${ADAPTER_USAGE}`);
  switch (sub) {
    case 'test': {
      const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { config: { type: 'string' } } });
      if (positionals.length !== 1 || !values.config) throw usage('test PATH|NAME --config FILE');
      const cfg = await readConfig(values.config);
      const rows = await runConformance(adapterPath(positionals[0]!), cfg, json ? undefined : (r) => process.stderr.write(`${r.result === 'pass' ? 'ok  ' : r.result === 'fail' ? 'FAIL' : 'skip'} ${r.step}\n`));
      if (json) printJson(rows);
      else process.stdout.write(conformanceTable(rows));
      if (rows.some((r) => r.result !== 'pass')) process.exitCode = 1;
      return;
    }
    case 'schema': {
      if (args.length > 1) throw usage('schema [COMMAND]');
      const c = args[0];
      if (c !== undefined && !(ADAPTER_COMMANDS as readonly string[]).includes(c)) throw new MamoriError('INVALID_INPUT', `no command ${c} in the protocol; it has: ${ADAPTER_COMMANDS.join(', ')}`);
      return printJson(c ? RESULT_SCHEMAS[c as AdapterCommand] : { response: RESPONSE_SCHEMA, results: RESULT_SCHEMAS });
    }
    default:
      throw usage('<command>');
  }
}

async function readConfig(file: string): Promise<ConformanceConfig> {
  let cfg: unknown;
  try {
    cfg = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new MamoriError('INVALID_INPUT', `cannot read the conformance configuration ${file}: ${(e as Error).message}`, { cause: e });
  }
  const c = cfg as Partial<ConformanceConfig>;
  const side = (s: unknown, device: boolean): boolean => typeof s === 'object' && s !== null && typeof (s as { arrayId?: unknown }).arrayId === 'string'
    && typeof (s as { connection?: unknown }).connection === 'object' && (!device || typeof (s as { deviceId?: unknown }).deviceId === 'string');
  if (!side(c.source, true) || !side(c.target, false)) {
    throw new MamoriError('INVALID_INPUT', `${file} must hold {"source":{"connection":{...},"arrayId":"A","deviceId":"D"},"target":{"connection":{...},"arrayId":"B"}}`);
  }
  return c as ConformanceConfig;
}
