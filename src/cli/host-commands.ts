import type { ApiClient } from './api-client.js';
import { printFields, printJson } from './output.js';
import { MamoriError } from '../core/mamori-error.js';

export async function hostCommand(api: ApiClient, argv: string[], json: boolean): Promise<void> {
  if (argv[0] !== 'info') throw new MamoriError('INVALID_INPUT', 'usage: mamori host info [--json]');
  const info = await api.get('/host/info');
  if (json) return printJson(info);
  const defaults = info.machineTypes
    .filter((m) => m.alias || m.isDefault)
    .map((m) => `${m.alias ?? ''}${m.alias ? '=' : ''}${m.name}${m.isDefault ? ' (default)' : ''}`);
  printFields({
    site: info.site,
    accelerator: `${info.accelerator.accel} (${info.accelerator.reason})`,
    qemu: `${info.qemu.version} (${info.qemu.binary})`,
    'machine types': `${info.machineTypes.length} available; ${defaults.join(', ')}`,
    uefi: info.ovmf ? info.ovmf.code : 'not installed',
    'test guest': info.testGuest?.available ? info.testGuest.dir : `missing (run make setup)`,
  });
}
