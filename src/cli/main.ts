import { MamoriError, isMamoriError } from '../core/mamori-error.js';
import { ApiClient, resolveSite } from './api-client.js';
import { runOfflineTool } from './offline/offline-tools.js';
import { vmCommand, VM_USAGE } from './vm-commands.js';
import { diskCommand, DISK_USAGE } from './disk-commands.js';
import { replicateCommand, REPLICATE_USAGE } from './replicate-commands.js';
import { replicaCommand, REPLICA_USAGE } from './replica-commands.js';
import { hostCommand } from './host-commands.js';
import { siteCommand, SITE_USAGE } from './site-commands.js';
import { printJson, printTable } from './output.js';
import { groupCommand, GROUP_USAGE } from './group-commands.js';
import { mappingCommand, networkCommand, NETWORK_USAGE } from './network-commands.js';
import { arrayCommand, compatCheckCommand, ARRAY_USAGE } from './array-commands.js';
import { benchCommand } from './bench-command.js';
import { planCommand, PLAN_USAGE } from './plan-commands.js';
import { alertsCommand, ALERTS_USAGE } from './alert-commands.js';
import { tokenCommand, TOKEN_USAGE } from './token-commands.js';
import { auditCommand, AUDIT_USAGE } from './audit-commands.js';
import { jobCommand } from './job-commands.js';

const USAGE = `mamori: disaster recovery, replication and migration for QEMU/KVM

usage: mamori [--data DIR | --url URL --token TOKEN] [--json] <command> ...
  serve --data DIR [--db URL] [--listen HOST:PORT] [--name SITE] [--insecure-http]
        [--allow-device GLOB]... [--allow-import DIR]...
                                                         run a site server (HTTPS with its own CA); host
                                                         paths callers may name: block devices matching
                                                         GLOB (default /dev/**), files under DIR; the
                                                         database: SQLite in DIR, or PostgreSQL with
                                                         --db postgresql://... (or MAMORI_DB)
  host info                                              accelerator, QEMU version, machine types
  site ...                                               pairing with other sites, their replication links
                                                         (bandwidth, schedule, cycles at once; mamori site --help)
  vm ...                                                 VMs (mamori vm --help)
  disk ...                                               disks and raw device mappings
  job list [--kind K] [--state S] | job show ID | job kinds   long operations (every kind), their steps and recovery policies
  events [--open]                                        incidents (violated RPO, ...), open and cleared
  alerts list | alerts webhook set URL|clear|test        open incidents; the webhook they are posted to
  token create --role R --name N [--expires 30d] | list | revoke ID
                                                         API tokens: admin, operator, viewer
  audit list [--since T] [--token ID] | audit verify     who changed what; check the log's hash chain
  group ...                                              protection groups (mamori group --help)
  network ... | mapping ...                              site networks, inventory mappings for recovery
  plan ...                                               recovery plans: test, cleanup, planned, disaster
  verify-writelog IMAGE                                  check a test-guest data disk (offline)
  adapter test PATH|NAME --config FILE | adapter schema  storage adapters: conformance suite, protocol
  array ... | compat search|check                        storage arrays through adapters, compatibility
  bench storage [--mib N] [--seconds S]                  image disks against RDMs, inside a test guest
  inspect SOURCE                                         partition table, filesystems, firmware, boot
                                                         loader and guest OS of a disk or image (offline);
                                                         SOURCE may be an NBD URI (nbd://, nbd+unix://, nbds://)
  convert SOURCE --name VM [--format F] [--start]       P2V/V2V: a disk, image or NBD URI into a VM of the site
  convert SOURCE --check                                 the compatibility report only (exit 1 if blocked)
  convert nbd://HOST:PORT --agent-key KEY --name VM      P2V of a running machine through its agent
  p2v-agent --device /dev/sdX [--listen ADDR]            on the machine to convert: serve its disk
  export VM --format vmdk|vhdx|ova [--output DIR]        a stopped VM for VMware or Hyper-V
  pool ...                                               desktop pools of linked clones (mamori pool --help)

The site comes from --data DIR (a local site), or MAMORI_URL and MAMORI_TOKEN; MAMORI_CA names
the CA certificate to trust for it (the site's DATA/tls/ca-cert.pem).

${VM_USAGE}

${DISK_USAGE}

${REPLICATE_USAGE}

${REPLICA_USAGE}

${SITE_USAGE}

${GROUP_USAGE}

${NETWORK_USAGE}

${ARRAY_USAGE}

${PLAN_USAGE}

${ALERTS_USAGE}

${TOKEN_USAGE}
${AUDIT_USAGE}
`;

/** Global flags may stand anywhere; they are taken out before the command parses its own. */
function takeGlobals(argv: string[]): {
  rest: string[];
  json: boolean;
  data?: string;
  url?: string;
  token?: string;
  help: boolean;
} {
  const rest: string[] = [];
  const out: { json: boolean; data?: string; url?: string; token?: string; help: boolean } = {
    json: false,
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new MamoriError('INVALID_INPUT', `${a} needs a value`);
      return v;
    };
    if (a === '--json') out.json = true;
    else if (a === '--help' || a === '-h') out.help = true;
    else if (a === '--url') out.url = value();
    else if (a === '--token') out.token = value();
    else if (a === '--data' && argv[0] !== 'serve') out.data = value();
    else if (a.startsWith('--data=') && argv[0] !== 'serve') out.data = a.slice(7);
    else rest.push(a);
  }
  // `site pair URL --token T`: there --token is the peer's admin token, not this CLI's.
  if (rest[0] === 'site' && rest[1] === 'pair' && out.token !== undefined) {
    rest.push('--token', out.token);
    delete out.token;
  }
  return { rest, ...out };
}

/** How run() parses without acting (parse-only.ts builds it): an API client that sends nothing, and a check of local commands' arguments. */
export interface ParseOnlyMode {
  api: ApiClient;
  /** True when `cmd` is a local command (its arguments then checked, nothing run); false for API commands. */
  local: (cmd: string, rest: string[]) => Promise<boolean>;
}

/** Runs one command line; `parseOnly` (src/cli/parse-only.ts) parses it and runs nothing. */
export async function run(argv: string[], parseOnly?: ParseOnlyMode): Promise<void> {
  const g = takeGlobals(argv);
  const [cmd, ...rest] = g.rest;
  if (g.help || !cmd || cmd === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  if (parseOnly && (await parseOnly.local(cmd, rest))) return;
  // serve, inspect, verify-writelog, p2v-agent, adapter, compat search: no site to call.
  if (await runOfflineTool(cmd, rest, g.json)) return;
  const api =
    parseOnly?.api ??
    new ApiClient(
      await resolveSite({
        ...(g.data ? { data: g.data } : {}),
        ...(g.url ? { url: g.url } : {}),
        ...(g.token ? { token: g.token } : {}),
      }),
    );
  switch (cmd) {
    case 'vm':
      return vmCommand(api, rest, g.json);
    case 'disk':
      return diskCommand(api, rest, g.json);
    case 'convert':
      return (await import('./convert-command.js')).convertCommand(api, rest, g.json);
    case 'pool':
      return (await import('./pool-commands.js')).poolCommand(api, rest, g.json);
    case 'export':
      return (await import('./export-command.js')).exportCommand(api, rest, g.json);
    case 'replicate':
      return replicateCommand(api, rest, g.json);
    case 'replica':
      return replicaCommand(api, rest, g.json);
    case 'host':
      return hostCommand(api, rest, g.json);
    case 'site':
      return siteCommand(api, rest, g.json);
    case 'job':
      return jobCommand(api, rest, g.json);
    case 'group':
      return groupCommand(api, rest, g.json);
    case 'network':
      return networkCommand(api, rest, g.json);
    case 'array':
      return arrayCommand(api, rest, g.json);
    case 'bench':
      return benchCommand(api, rest, g.json);
    case 'compat':
      if (rest[0] !== 'check' || rest.length !== 1)
        throw new MamoriError(
          'INVALID_INPUT',
          `usage: mamori compat search [--adapter A] [--array MODEL] | compat check\n${ARRAY_USAGE}`,
        );
      return compatCheckCommand(api, g.json);
    case 'mapping':
      return mappingCommand(api, rest, g.json);
    case 'plan':
      return planCommand(api, rest, g.json);
    case 'alerts':
      return alertsCommand(api, rest, g.json);
    case 'token':
      return tokenCommand(api, rest, g.json);
    case 'audit':
      return auditCommand(api, rest, g.json);
    case 'events': {
      // `events [--open]`: incidents such as a violated RPO, newest first.
      const unknown = rest.filter((x) => x !== '--open');
      if (unknown.length > 0)
        throw new MamoriError('INVALID_INPUT', `usage: mamori events [--open] [--json] (unknown ${unknown.join(' ')})`);
      const list = await api.get('/events', { query: rest.includes('--open') ? { open: 'true' } : {} });
      if (g.json) return printJson(list);
      if (list.length === 0)
        return void process.stdout.write(rest.includes('--open') ? 'no open incidents\n' : 'no incidents\n');
      return printTable(
        list.map((e) => ({ ...e, state: e['clearedAt'] === null ? 'OPEN' : 'cleared' })),
        ['openedAt', 'state', 'severity', 'kind', 'message'],
      );
    }
    default:
      throw new MamoriError('INVALID_INPUT', `unknown command ${JSON.stringify(cmd)}; see 'mamori --help'`);
  }
}

/** The CLI's entry (bin/mamori calls it): importing this module runs nothing. */
export function main(argv = process.argv.slice(2)): void {
  run(argv).then(
    () => process.exit(process.exitCode ?? 0),
    (e: unknown) => {
      const json = process.argv.includes('--json');
      if (isMamoriError(e)) {
        if (json) printJson({ error: e.toJSON() });
        process.stderr.write(`mamori: ${e.message} [${e.code}]\n`);
        process.exit(e.code === 'INVALID_INPUT' || e.code === 'CONFIG_MISSING' ? 2 : 1);
      }
      process.stderr.write(`mamori: unexpected error: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
