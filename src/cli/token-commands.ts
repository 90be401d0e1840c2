import { parseArgs } from 'node:util';
import { MamoriError } from '../core/mamori-error.js';
import type { ApiClient } from './api-client.js';
import type { RequestBody } from './api-types.js';
import { printJson, printTable } from './output.js';

export const TOKEN_USAGE = `mamori token <command>          API tokens (an admin token is needed)
  create --role admin|operator|viewer --name NAME [--expires 30d]
                                      print a new token once (only its hash is kept)
  list                                id, name, role, expiry and last use of every token
  revoke ID|NAME                      the token stops working at once`;

export async function tokenCommand(api: ApiClient, rest: string[], json: boolean): Promise<void> {
  const usage = (what: string): MamoriError =>
    new MamoriError('INVALID_INPUT', `usage: mamori token ${what}\n${TOKEN_USAGE}`);
  const [sub, ...args] = rest;
  switch (sub) {
    case 'create': {
      const { values, positionals } = parseArgs({
        args,
        strict: true,
        allowPositionals: true,
        options: { role: { type: 'string' }, name: { type: 'string' }, expires: { type: 'string' } },
      });
      if (positionals.length > 0 || !values.role || !values.name)
        throw usage('create --role ROLE --name NAME [--expires 30d]');
      const made = await api.post('/tokens', {
        body: {
          name: values.name,
          // The server checks the role and names the ones it takes.
          role: values.role as RequestBody<'/tokens', 'post'>['role'],
          ...(values.expires ? { expires: values.expires } : {}),
        },
      });
      if (json) return printJson(made);
      process.stdout.write(`${made.token}\n`);
      process.stderr.write(
        `token ${made.id} (${made.name}, ${made.role}${made.expiresAt ? `, expires ${made.expiresAt}` : ', does not expire'}): shown only now; store it like a password\n`,
      );
      return;
    }
    case 'list': {
      if (args.length !== 0) throw usage('list');
      const list = await api.get('/tokens');
      if (json) return printJson(list);
      return printTable(
        list.map((t) => ({ ...t, expiresAt: t.expiresAt ?? 'never', lastUsedAt: t.lastUsedAt ?? 'never' })),
        ['id', 'name', 'role', 'createdAt', 'expiresAt', 'lastUsedAt'],
      );
    }
    case 'revoke': {
      if (args.length !== 1) throw usage('revoke ID|NAME');
      const gone = await api.delete('/tokens/{id}', { path: { id: args[0]! } });
      return json
        ? printJson(gone)
        : void process.stdout.write(`token ${gone.id} (${gone.name}, ${gone.role}) revoked\n`);
    }
    default:
      throw usage('create | list | revoke');
  }
}
