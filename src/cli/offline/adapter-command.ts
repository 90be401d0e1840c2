import { readFile, rename, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { MamoriError } from '../../core/mamori-error.js';
import { printJson } from '../output.js';
import { adapterPath } from '../../adapters/bundled-adapters.js';
import {
  conformanceTable,
  runConformance,
  type ConformanceConfig,
  type ConformanceRow,
} from '../../adapters/conformance-suite.js';
import { AdapterClient } from '../../adapters/adapter-client.js';
import { withZfsScratchArrays } from '../../adapters/zfs/zfs-scratch.js';
import {
  MAMORI_VERSION,
  featuresForRow,
  readCompatGuide,
  recordCompat,
  type CompatGuide,
} from '../../adapters/compat-guide.js';
import {
  ADAPTER_COMMANDS,
  RESPONSE_SCHEMA,
  RESULT_SCHEMAS,
  type AdapterCommand,
} from '../../adapters/adapter-protocol.js';

export const ADAPTER_USAGE = `mamori adapter <command>        storage adapters (docs/adapters.md)
  test PATH|NAME --config FILE [--record GUIDE]
                                      the conformance suite: the whole lifecycle against two scratch
                                      arrays FILE describes (the bundled zfs makes its own on sparse
                                      files when --config is left out); prints a pass/fail table; --record
                                      writes the result into a compatibility guide (compat/guide.json)
  schema [COMMAND]                    the protocol's JSON schemas (all, or one command's result)`;

/** `adapter test`'s options (also what src/cli/parse-only.ts checks a command against). */
export const ADAPTER_TEST_OPTIONS = { config: { type: 'string' }, record: { type: 'string' } } as const;

/** Runs in the CLI itself: an adapter is tested where it runs, no site server needed. */
export async function adapterCommand(rest: string[], json: boolean): Promise<void> {
  const [sub, ...args] = rest;
  const usage = (what: string): MamoriError =>
    new MamoriError('INVALID_INPUT', `usage: mamori adapter ${what}\n${ADAPTER_USAGE}`);
  switch (sub) {
    case 'test': {
      const { values, positionals } = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: ADAPTER_TEST_OPTIONS,
      });
      // The bundled ZFS adapter brings its own scratch arrays; any other adapter is given them.
      if (positionals.length !== 1 || (!values.config && positionals[0] !== 'zfs'))
        throw usage('test PATH|NAME --config FILE [--record GUIDE]  (zfs alone may leave out --config)');
      const path = adapterPath(positionals[0]!);
      // Read first: a guide that does not parse must stop the run, not be overwritten after it.
      const guide = values.record ? await readCompatGuide(values.record) : null;
      const run = async (cfg: ConformanceConfig): Promise<void> => {
        const rows = await runConformance(
          path,
          cfg,
          json
            ? undefined
            : (r) =>
                process.stderr.write(
                  `${r.result === 'pass' ? 'ok  ' : r.result === 'fail' ? 'FAIL' : 'skip'} ${r.step}\n`,
                ),
        );
        if (json) printJson(rows);
        else process.stdout.write(conformanceTable(rows));
        if (rows.some((r) => r.result !== 'pass')) process.exitCode = 1;
        if (guide && values.record) await recordRun(values.record, guide, path, cfg, rows);
      };
      if (values.config) return run(await readConfig(values.config));
      return withZfsScratchArrays(run);
    }
    case 'schema': {
      if (args.length > 1) throw usage('schema [COMMAND]');
      const c = args[0];
      if (c !== undefined && !(ADAPTER_COMMANDS as readonly string[]).includes(c))
        throw new MamoriError(
          'INVALID_INPUT',
          `no command ${c} in the protocol; it has: ${ADAPTER_COMMANDS.join(', ')}`,
        );
      return printJson(
        c ? RESULT_SCHEMAS[c as AdapterCommand] : { response: RESPONSE_SCHEMA, results: RESULT_SCHEMAS },
      );
    }
    default:
      throw usage('<command>');
  }
}

/** The guide's row for this adapter and array model, from the run just made: never written by hand. */
async function recordRun(
  file: string,
  guide: CompatGuide,
  path: string,
  cfg: ConformanceConfig,
  rows: ConformanceRow[],
): Promise<void> {
  const client = new AdapterClient(path, cfg.source.connection);
  const info = await client.call('queryInfo', {});
  const array = (await client.call('discoverArrays', {})).arrays.find((a) => a.id === cfg.source.arrayId);
  if (!array) throw new MamoriError('INVALID_INPUT', `array ${cfg.source.arrayId} is gone; nothing recorded`);
  const failed = rows.filter((r) => r.result !== 'pass').length;
  const next = recordCompat(guide, {
    adapter: info.name,
    adapterVersion: info.version,
    vendor: info.vendor,
    arrayModel: array.model,
    softwareVersions: [array.softwareVersion],
    ...featuresForRow(array.features),
    protocol: 1,
    mamoriVersions: [MAMORI_VERSION],
    conformance: {
      result: failed === 0 ? 'pass' : 'fail',
      date: new Date().toISOString(),
      passed: rows.length - failed,
      failed,
    },
  });
  const tmp = `${file}.new`;
  await writeFile(tmp, `${JSON.stringify(next, null, 2)}\n`);
  await rename(tmp, file);
  process.stderr.write(
    `recorded ${info.name} ${info.version} with ${array.model} ${array.softwareVersion}: ${failed === 0 ? 'pass' : 'fail'} in ${file}\n`,
  );
}

async function readConfig(file: string): Promise<ConformanceConfig> {
  let cfg: unknown;
  try {
    cfg = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new MamoriError(
      'INVALID_INPUT',
      `cannot read the conformance configuration ${file}: ${(e as Error).message}`,
      { cause: e },
    );
  }
  const c = cfg as Partial<ConformanceConfig>;
  const side = (s: unknown, device: boolean): boolean =>
    typeof s === 'object' &&
    s !== null &&
    typeof (s as { arrayId?: unknown }).arrayId === 'string' &&
    typeof (s as { connection?: unknown }).connection === 'object' &&
    (!device || typeof (s as { deviceId?: unknown }).deviceId === 'string');
  if (!side(c.source, true) || !side(c.target, false)) {
    throw new MamoriError(
      'INVALID_INPUT',
      `${file} must hold {"source":{"connection":{...},"arrayId":"A","deviceId":"D"},"target":{"connection":{...},"arrayId":"B"}}`,
    );
  }
  return c as ConformanceConfig;
}
