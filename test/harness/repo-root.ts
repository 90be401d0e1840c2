import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout root, from dist/test/harness/ (tests run compiled). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
