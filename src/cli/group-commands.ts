import { parseArgs } from 'node:util';
import { MamoriError } from '../core/mamori-error.js';
import type { ApiClient } from './api-client.js';
import { printFields, printJson, printTable } from './output.js';
import type { ProtectionGroupView } from '../plans/protection-groups.js';

export const GROUP_USAGE = `mamori group <command>          protection groups: replicated VMs that recovery plans recover together
  create NAME --vm VM [--vm VM ...]   a VM is in at most one group; all replicate to one site
  list | show NAME
  add NAME VM | remove NAME VM
  delete NAME                         the VMs stay replicated`;

export async function groupCommand(api: ApiClient, rest: string[], json: boolean): Promise<void> {
  const [sub, ...args] = rest;
  const base = (name: string): string => `/protection-groups/${encodeURIComponent(name)}`;
  const show = (g: ProtectionGroupView): void => (json ? printJson(g) : printFields({ name: g.name, 'recovers at': g.peer, vms: g.vms.join(', '), created: g.createdAt }));
  const usage = (what: string): MamoriError => new MamoriError('INVALID_INPUT', `usage: mamori group ${what}\n${GROUP_USAGE}`);
  switch (sub) {
    case 'create': {
      const { values, positionals } = parseArgs({ args, allowPositionals: true, strict: true, options: { vm: { type: 'string', multiple: true } } });
      if (positionals.length !== 1 || !values.vm?.length) throw usage('create NAME --vm VM [--vm VM ...]');
      return show(await api.post<ProtectionGroupView>('/protection-groups', { name: positionals[0], vms: values.vm }));
    }
    case 'list': {
      const all = await api.get<ProtectionGroupView[]>('/protection-groups');
      if (json) return printJson(all);
      if (all.length === 0) return void process.stdout.write("no protection groups; 'mamori group create NAME --vm VM' makes one\n");
      return printTable(all.map((g) => ({ name: g.name, 'recovers at': g.peer, vms: g.vms.join(', ') })), ['name', 'recovers at', 'vms']);
    }
    case 'show':
      if (args.length !== 1) throw usage('show NAME');
      return show(await api.get<ProtectionGroupView>(base(args[0]!)));
    case 'add':
      if (args.length !== 2) throw usage('add NAME VM');
      return show(await api.post<ProtectionGroupView>(`${base(args[0]!)}/vms`, { vm: args[1] }));
    case 'remove':
      if (args.length !== 2) throw usage('remove NAME VM');
      return show(await api.delete<ProtectionGroupView>(`${base(args[0]!)}/vms/${encodeURIComponent(args[1]!)}`));
    case 'delete':
      if (args.length !== 1) throw usage('delete NAME');
      await api.delete(base(args[0]!));
      if (json) return printJson({ deleted: args[0] });
      return void process.stdout.write(`protection group ${args[0]} deleted; its VMs stay replicated\n`);
    default:
      throw usage('<command>');
  }
}
