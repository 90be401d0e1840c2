import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import type { ApiClient } from './api-client.js';
import type { Peer, RequestBody } from './api-types.js';
import { printFields, printJson, printTable } from './output.js';
import { MamoriError } from '../core/mamori-error.js';
import { int, one } from './vm-commands.js';

export const SITE_USAGE = `mamori site <command>
  ca [--pem]                         this site's CA fingerprint (what a peer may check with --fingerprint)
  pair URL --token PEER_ADMIN_TOKEN [--name NAME] [--fingerprint SHA256]
                                     pair with the site at URL (run it on both sites, each with the
                                     other's admin token; --token-file FILE reads the token from a file)
  list [--no-check]                  paired sites: reachability, round trip, clock offset
  show NAME | ping NAME              one paired site; ping fails unless it answers with our token
  unpair NAME                        forget the site here and ask it to forget us
  link NAME [--bandwidth 50M|none] [--schedule 'Mon-Fri 08:00-18:00,Sat 09:00-12:00'|none]
            [--concurrency N]        replication's budget on the link to NAME: a bandwidth cap in
                                     bits per second (50M = 50 Mbit/s; K, M, G; none removes it),
                                     the windows it applies in (days and times in this site's local
                                     time zone; the full rate outside them; none: always), and the
                                     cycles in flight at once (default 4); options left out stay`;

export async function siteCommand(api: ApiClient, argv: string[], json: boolean): Promise<void> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'ca': {
      const { values } = parseArgs({ args: rest, strict: true, options: { pem: { type: 'boolean' } } });
      const id = await api.get('/site/ca');
      if (json) return printJson(id);
      if (values.pem) return void process.stdout.write(id.caCertPem);
      return printFields({ site: id.name, 'CA SHA256': id.fingerprint });
    }
    case 'pair': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: {
          token: { type: 'string' },
          'token-file': { type: 'string' },
          name: { type: 'string' },
          fingerprint: { type: 'string' },
        },
      });
      const url = one(positionals, 'site pair URL --token PEER_ADMIN_TOKEN [--name NAME] [--fingerprint SHA256]');
      const token = values['token-file'] ? (await readFile(values['token-file'], 'utf8')).trim() : values.token;
      if (!token)
        throw new MamoriError(
          'INVALID_INPUT',
          'site pair needs --token (or --token-file): the admin token of the site at URL, from its DATA/admin-token',
        );
      const body: RequestBody<'/sites', 'post'> = { url, token };
      if (values.name) body['name'] = values.name;
      if (values.fingerprint) body['fingerprint'] = values.fingerprint;
      const peer = await api.post('/sites', { body });
      if (json) return printJson(peer);
      const proven = values.fingerprint
        ? 'matches --fingerprint and proven by its admin token'
        : "proven by its admin token; compare with 'mamori site ca' there";
      process.stdout.write(
        `paired with ${peer.name} at ${peer.url}\n  its CA SHA256 ${peer.fingerprint}\n  (${proven})\n`,
      );
      process.stdout.write(
        peer.direction === 'both'
          ? '  both ways: each site can call the other\n'
          : `  one way so far: run 'mamori site pair THIS_SITE_URL --token THIS_SITE_ADMIN_TOKEN' on ${peer.name} too\n`,
      );
      return void process.stdout.write(`  ${statusText(peer)}\n`);
    }
    case 'list': {
      const { values } = parseArgs({ args: rest, strict: true, options: { 'no-check': { type: 'boolean' } } });
      const peers = await api.get('/sites', { query: values['no-check'] ? { check: 'false' } : {} });
      if (json) return printJson(peers);
      if (peers.length === 0)
        return void process.stdout.write(
          "no paired sites; 'mamori site pair URL --token PEER_ADMIN_TOKEN' pairs one\n",
        );
      return printTable(
        peers.map((p) => ({
          name: p.name,
          url: p.url,
          direction: p.direction,
          state: p.status.state,
          rtt: p.status.rttMs === null ? null : `${p.status.rttMs} ms`,
          clock: p.status.clockOffsetMs == null ? null : signedMs(p.status.clockOffsetMs),
          fingerprint: `${p.fingerprint.slice(0, 23)}...`,
          link: linkText(p.link),
        })),
        ['name', 'url', 'direction', 'state', 'rtt', 'clock', 'link', 'fingerprint'],
      );
    }
    case 'show': {
      const peer = await api.get('/sites/{name}', { path: { name: one(rest, 'site show NAME') } });
      if (json) return printJson(peer);
      return printFields({
        name: peer.name,
        url: peer.url,
        direction: peer.direction,
        'CA SHA256': peer.fingerprint,
        'paired at': peer.pairedAt,
        status: statusText(peer),
        'replication link': linkText(peer.link),
      });
    }
    case 'ping': {
      const p = await api.get('/sites/{name}/ping', { path: { name: one(rest, 'site ping NAME') } });
      if (json) return printJson(p);
      return void process.stdout.write(
        `${p.name} (${p.site}, knows us as ${p.knownThereAs}): rtt ${p.rttMs} ms, clock ${signedMs(p.clockOffsetMs)}\n`,
      );
    }
    case 'link': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        strict: true,
        options: {
          bandwidth: { type: 'string' },
          schedule: { type: 'string' },
          concurrency: { type: 'string' },
        },
      });
      const name = one(
        positionals,
        "site link NAME [--bandwidth 50M|none] [--schedule 'Mon-Fri 08:00-18:00'|none] [--concurrency N]",
      );
      const body: RequestBody<'/sites/{name}/link', 'put'> = {};
      if (values.bandwidth !== undefined) body.bandwidth = values.bandwidth;
      if (values.schedule !== undefined) body.schedule = values.schedule;
      if (values.concurrency !== undefined) body.concurrency = int(values.concurrency, '--concurrency');
      if (Object.keys(body).length === 0)
        throw new MamoriError(
          'INVALID_INPUT',
          "site link needs --bandwidth, --schedule or --concurrency (e.g. 'mamori site link site-b --bandwidth 50M')",
        );
      const link = await api.put('/sites/{name}/link', { path: { name }, body });
      if (json) return printJson(link);
      return void process.stdout.write(`${link.peer}: ${linkText(link)}\n`);
    }
    case 'unpair': {
      const r = await api.delete('/sites/{name}', { path: { name: one(rest, 'site unpair NAME') } });
      if (json) return printJson(r);
      return void process.stdout.write(
        r.peerNotified
          ? `unpaired ${r.name} on both sites\n`
          : `unpaired ${r.name} here; it could not be told (${r.peerError ? `${r.peerError.message} [${r.peerError.code}]` : 'it never paired back'}): run 'mamori site unpair THIS_SITE' there too (THIS_SITE: this site's name, as 'mamori site list' there shows it)\n`,
      );
    }
    default:
      throw new MamoriError('INVALID_INPUT', `unknown site command ${JSON.stringify(sub ?? '')}\n${SITE_USAGE}`);
  }
}

function statusText(p: Peer): string {
  const s = p.status;
  if (s.state === 'reachable') return `reachable, rtt ${s.rttMs} ms, clock ${signedMs(s.clockOffsetMs ?? 0)}`;
  if (s.state === 'not-callable') return 'not callable from here (it paired with us; pair from this side too)';
  if (s.state === 'not-checked') return 'not checked';
  return `${s.state}: ${s.error?.message ?? ''}${s.error ? ` [${s.error.code}]` : ''}`;
}

function signedMs(ms: number): string {
  return `${ms >= 0 ? '+' : ''}${ms} ms`;
}

/** A link's budget in a line: '50 Mbit/s Mon-Fri 08:00-18:00 (full rate outside), 4 cycles at once'. */
function linkText(l: { bitsPerSecond: number | null; schedule: string | null; concurrency: number }): string {
  const cap =
    l.bitsPerSecond === null
      ? 'no bandwidth cap'
      : `${Number((l.bitsPerSecond / 1e6).toFixed(3))} Mbit/s ${l.schedule === null ? 'always' : `${l.schedule} (local time; full rate outside)`}`;
  return `${cap}, ${l.concurrency} cycle${l.concurrency === 1 ? '' : 's'} at once`;
}
