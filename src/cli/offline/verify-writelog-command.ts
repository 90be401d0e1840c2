import { resolve } from 'node:path';
import { verifyWriteLog } from '../../guest/writelog-verifier.js';
import { printFields, printJson } from '../output.js';
import { MamoriError } from '../../core/mamori-error.js';

/** Offline check of a test-guest data disk; needs no site. Exit 1 when the log is not consistent. */
export async function verifyWritelogCommand(argv: string[], json: boolean): Promise<void> {
  if (argv.length !== 1) throw new MamoriError('INVALID_INPUT', 'usage: mamori verify-writelog IMAGE [--json]');
  const report = await verifyWriteLog(resolve(argv[0]!));
  if (json) printJson(report);
  else {
    printFields({
      image: report.image,
      format: report.format,
      records: report.records,
      'last sequence': report.lastSequence,
      'gap-free prefix': report.gapFreePrefix,
      gaps: report.gaps.length,
      torn: report.tornCount,
      verdict: report.consistent ? 'consistent (gap-free prefix)' : 'NOT CONSISTENT: data corruption',
    });
  }
  if (!report.consistent) process.exitCode = 1;
}
