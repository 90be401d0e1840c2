import { MamoriError } from '../core/mamori-error.js';
import type { ApiClient } from './api-client.js';
import { printJson, printTable } from './output.js';
import type { ResponseOf } from './api-types.js';

export const AUDIT_USAGE = `mamori audit <command>          who changed what on this site, and refused tokens (admin token)
  list [--since TIME] [--token ID] [--limit N]
                                      entries, newest first (default 100, at most 1000)
  verify                              walk the log's hash chain; exits 1 naming the first entry
                                      edited, removed or reordered`;

export async function auditCommand(api: ApiClient, rest: string[], json: boolean): Promise<void> {
  const usage = (what: string): MamoriError =>
    new MamoriError('INVALID_INPUT', `usage: mamori audit ${what}\n${AUDIT_USAGE}`);
  const [sub, ...args] = rest;
  if (sub === 'list')
    return listAudit(
      api,
      parseListFlags(args, () => usage('list [--since TIME] [--token ID] [--limit N]')),
      json,
    );
  if (sub === 'verify') {
    if (args.length !== 0) throw usage('verify');
    return verifyAudit(await api.get('/audit/verify'), json);
  }
  throw usage('list | verify');
}

function parseListFlags(args: string[], usage: () => MamoriError): Record<string, string> {
  const query: Record<string, string> = {};
  const names: Record<string, string> = { '--since': 'since', '--token': 'token', '--limit': 'limit' };
  for (let i = 0; i < args.length; i += 2) {
    const name = names[args[i]!];
    const value = args[i + 1];
    if (!name || value === undefined) throw usage();
    query[name] = value;
  }
  return query;
}

async function listAudit(api: ApiClient, query: Record<string, string>, json: boolean): Promise<void> {
  const list = await api.get('/audit', { query });
  if (json) return printJson(list);
  if (list.length === 0) return void process.stdout.write('no audit entries\n');
  printTable(
    list.map((e) => ({
      '#': e.seq,
      at: e.at,
      token: e.tokenId ? `${e.tokenId} (${e.role})` : '-',
      from: e.source,
      call: `${e.method} ${e.route}`,
      target: e.target
        ? Object.entries(e.target)
            .map(([k, v]) => `${k}=${v}`)
            .join(' ')
        : null,
      result: e.errorCode ? `${e.status} ${e.errorCode}` : e.status,
    })),
    ['#', 'at', 'token', 'from', 'call', 'target', 'result'],
  );
}

function verifyAudit(v: ResponseOf<'/audit/verify', 'get'>, json: boolean): void {
  const bad = v.firstBad;
  if (!bad) {
    if (json) return printJson(v);
    return void process.stdout.write(
      `audit log intact: ${v.entries} entries${v.head ? `, newest #${v.head.seq} (${v.head.hash.slice(0, 16)}…)` : ''}\n`,
    );
  }
  const message = `the audit log's chain is broken at entry #${bad.seq} (${bad.problem}): ${bad.message}; ${v.entries} entries walked. Treat the site's database as tampered with`;
  if (!json) throw new MamoriError('AUDIT_CHAIN_BROKEN', message, { details: { ...bad } });
  // --json: the report itself on stdout for scripts, the exit status says it failed.
  printJson(v);
  process.stderr.write(`mamori: ${message} [AUDIT_CHAIN_BROKEN]\n`);
  process.exitCode = 1;
}
