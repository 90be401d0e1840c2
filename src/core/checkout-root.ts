import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The checkout's root (this file runs as dist/src/core/checkout-root.js): where `make setup`
 * builds the test guest, and where the bundled adapters and the compatibility guide ship.
 */
export const CHECKOUT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
