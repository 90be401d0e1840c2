import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout's root, from dist/src/adapters/. */
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Adapters shipped with mamori, by name: their launchers in adapters/NAME/. */
export const BUNDLED_ADAPTERS: Record<string, string> = {
  zfs: join(root, 'adapters', 'zfs', 'mamori-adapter-zfs'),
};

/** A bundled adapter's name, or a path to any adapter executable. */
export function adapterPath(nameOrPath: string): string {
  return BUNDLED_ADAPTERS[nameOrPath] ?? resolve(nameOrPath);
}
