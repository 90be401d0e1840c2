import { parseArgs } from 'node:util';
import { MamoriError } from '../../core/mamori-error.js';
import { printJson, printTable } from '../output.js';
import { describeSoftware, readCompatGuide, requiredFeaturesOf, searchCompat } from '../../adapters/compat-guide.js';

/** compat search's options (also what src/cli/parse-only.ts checks a command against). */
export const COMPAT_SEARCH_OPTIONS = {
  adapter: { type: 'string' },
  array: { type: 'string' },
  guide: { type: 'string' },
} as const;

/** `mamori compat search`: the shipped guide (or --guide FILE), filtered; no site needed. */
export async function compatSearchCommand(args: string[], json: boolean): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: COMPAT_SEARCH_OPTIONS,
  });
  if (positionals.length > 0)
    throw new MamoriError('INVALID_INPUT', 'usage: mamori compat search [--adapter A] [--array MODEL] [--guide FILE]');
  const rows = searchCompat(await readCompatGuide(values.guide), {
    ...(values.adapter ? { adapter: values.adapter } : {}),
    ...(values.array ? { array: values.array } : {}),
  });
  if (json) return printJson(rows);
  // A row with features matches by them (docs/adapters.md); its software versions only say where it ran.
  printTable(
    rows.map((e) => ({
      ...e,
      software: e.softwareVersions.join(', '),
      features: requiredFeaturesOf(e) === null ? '-' : describeSoftware(e),
      mamori: e.mamoriVersions.join(', '),
      conformance: `${e.conformance.result} ${e.conformance.date.slice(0, 10)} (${e.conformance.passed} passed)`,
    })),
    ['adapter', 'adapterVersion', 'vendor', 'arrayModel', 'software', 'features', 'mamori', 'conformance'],
  );
}
