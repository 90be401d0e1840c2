import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runTarget } from '../../fuzz/fuzz-runner.js';
import { FUZZ_TARGETS } from '../../fuzz/fuzz-targets.js';

/**
 * The fixed-seed share of the fuzz suite (test/fuzz/): every parser of outside input gets a
 * few hundred mutated real inputs, the same ones each run, and must end each in a result or
 * a MamoriError, within the deadline. `make fuzz` runs the long version.
 */
const EXECUTIONS = 250;
const SEED = 20261205;

for (const target of FUZZ_TARGETS) {
  test(
    `fuzz ${target.name}: ${EXECUTIONS} mutated inputs end in a result or a MamoriError`,
    { timeout: 120_000 },
    async () => {
      const r = await runTarget(target, { executions: EXECUTIONS, seed: SEED });
      assert.equal(r.executions, EXECUTIONS);
      const shown = r.findings
        .map(
          (f) =>
            `${f.kind} x${f.count}: ${f.error}\n  at ${f.where.join('\n  at ')}\n  input: ${JSON.stringify(f.input).slice(0, 400)}`,
        )
        .join('\n');
      assert.equal(r.crashes, 0, `crashes:\n${shown}`);
      assert.equal(r.hangs, 0, `hangs:\n${shown}`);
    },
  );
}
