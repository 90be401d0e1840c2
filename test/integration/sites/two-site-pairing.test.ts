import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { TwoSites } from '../../harness/two-sites.js';
import type { PeerView } from '../../../src/sites/peer-record.js';

/*
 * Two real site servers, each in its own network namespace, joined by a veth link:
 * pairing both ways, reachability and clock offset, a cut link (no hang), a wrong token,
 * and a peer that comes back with another CA.
 */

let sites: TwoSites;
before(async () => {
  sites = await TwoSites.create();
});
after(async () => {
  await sites?.destroy();
});

async function list(which: 'a' | 'b'): Promise<PeerView[]> {
  return sites.cliJson<PeerView[]>(which, 'site', 'list');
}

test('the sites serve HTTPS on their veth addresses, unreachable from the root namespace', async () => {
  assert.equal(sites.a.url, 'https://10.213.0.1:8443');
  assert.equal(sites.b.url, 'https://10.213.0.2:8443');
  const host = await sites.cliJson<{ site: string }>('b', 'host', 'info');
  assert.equal(host.site, 'site-b');
});

test('pairing with a wrong token fails clearly and stores nothing on either side', async () => {
  const r = await sites.cli('a', 'site', 'pair', sites.b.url, '--token', 'mamori_wrong-token');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /refused the pairing: --token is not that site's admin token.*\[PEER_AUTH_FAILED\]/);
  assert.deepEqual(await list('a'), []);
  assert.deepEqual(await list('b'), []);
});

test('paired both ways, each sees the other reachable with a small clock offset', async () => {
  const out = await sites.cli('a', 'site', 'pair', sites.b.url, '--token', await sites.b.adminToken());
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /paired with site-b at https:\/\/10\.213\.0\.2:8443/);
  assert.match(out.stdout, /its CA SHA256 ([0-9A-F]{2}:){31}[0-9A-F]{2}/);
  // The fingerprint site-a pinned is the one site-b shows for itself.
  const bCa = await sites.cliJson<{ fingerprint: string }>('b', 'site', 'ca');
  assert.ok(out.stdout.includes(bCa.fingerprint));
  await sites.cliJson(
    'b',
    'site',
    'pair',
    sites.a.url,
    '--token',
    await sites.a.adminToken(),
    '--fingerprint',
    (await sites.cliJson<{ fingerprint: string }>('a', 'site', 'ca')).fingerprint,
  );

  for (const [which, peer] of [
    ['a', 'site-b'],
    ['b', 'site-a'],
  ] as const) {
    const peers = await list(which);
    assert.equal(peers.length, 1);
    const p = peers[0]!;
    assert.equal(p.name, peer);
    assert.equal(p.direction, 'both');
    assert.equal(p.status.state, 'reachable', JSON.stringify(p.status));
    assert.ok(Math.abs(p.status.clockOffsetMs!) < 500, `clock offset ${p.status.clockOffsetMs} ms`);
    assert.ok(p.status.rttMs! < 500);
  }
  const text = await sites.cli('a', 'site', 'list');
  assert.match(text.stdout, /site-b\s+https:\/\/10\.213\.0\.2:8443\s+both\s+reachable/);
});

for (const mode of ['blackhole', 'down'] as const) {
  test(`a cut link (${mode}) shows the peer unreachable within seconds, and reachable once restored`, async () => {
    await sites.cutLink(mode);
    try {
      const t0 = Date.now();
      const peers = await list('a');
      const took = Date.now() - t0;
      assert.equal(peers[0]!.status.state, 'unreachable');
      assert.equal(peers[0]!.status.error?.code, 'PEER_UNREACHABLE');
      assert.ok(took < 6_000, `site list took ${took} ms with the link cut`);
      const ping = await sites.cli('b', 'site', 'ping', 'site-a');
      assert.equal(ping.code, 1);
      assert.match(ping.stderr, /\[PEER_UNREACHABLE\]/);
    } finally {
      await sites.restoreLink();
    }
    await sites.a.waitFor(
      'site-b reachable again',
      async () => (await list('a'))[0]!.status.state === 'reachable',
      20_000,
    );
    const ping = await sites.cliJson<{ rttMs: number }>('b', 'site', 'ping', 'site-a');
    assert.ok(ping.rttMs >= 0);
  });
}

test('a peer presenting another CA after pairing is refused with PEER_CERT_MISMATCH; re-pairing after unpair works', async () => {
  // site-b "reinstalled": same address and name, a new CA.
  await sites.b.stopServer();
  await rm(join(sites.b.dataDir, 'tls'), { recursive: true, force: true });
  await sites.b.start();

  const peers = await list('a');
  assert.equal(peers[0]!.status.state, 'cert-mismatch');
  const ping = await sites.cli('a', 'site', 'ping', 'site-b');
  assert.equal(ping.code, 1);
  assert.match(ping.stderr, /not signed by the CA pinned at pairing.*\[PEER_CERT_MISMATCH\]/);
  const again = await sites.cli('a', 'site', 'pair', sites.b.url, '--token', await sites.b.adminToken());
  assert.match(again.stderr, /\[PEER_CERT_MISMATCH\]/, 'the name stays bound to the old CA until unpaired');

  // The operator unpairs (site-b cannot be told: its certificate is refused) and pairs again.
  const unpaired = await sites.cliJson<{ peerNotified: boolean; peerError: { code: string } | null }>(
    'a',
    'site',
    'unpair',
    'site-b',
  );
  assert.equal(unpaired.peerNotified, false);
  assert.equal(unpaired.peerError?.code, 'PEER_CERT_MISMATCH');
  await sites.cliJson('a', 'site', 'pair', sites.b.url, '--token', await sites.b.adminToken());
  const after = await list('a');
  assert.equal(after[0]!.status.state, 'reachable');
  assert.equal(after[0]!.direction, 'outbound');
  // Unpairing revoked the token site-a had issued to site-b: site-b must pair back too.
  const refused = await sites.cli('b', 'site', 'ping', 'site-a');
  assert.match(refused.stderr, /\[PEER_AUTH_FAILED\]/);
  await sites.cliJson('b', 'site', 'pair', sites.a.url, '--token', await sites.a.adminToken());
  assert.equal((await list('a'))[0]!.direction, 'both');
  await sites.cliJson('b', 'site', 'ping', 'site-a');
  await sites.cliJson('a', 'site', 'ping', 'site-b');
});
