import { join, resolve } from 'node:path';
import { CHECKOUT_ROOT } from '../core/checkout-root.js';

/** Adapters shipped with mamori, by name: their launchers in adapters/NAME/. */
export const BUNDLED_ADAPTERS: Record<string, string> = {
  zfs: join(CHECKOUT_ROOT, 'adapters', 'zfs', 'mamori-adapter-zfs'),
};

/** A bundled adapter's name, or a path to any adapter executable. */
export function adapterPath(nameOrPath: string): string {
  return BUNDLED_ADAPTERS[nameOrPath] ?? resolve(nameOrPath);
}
