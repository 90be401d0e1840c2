import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { runProcess } from '../../../src/core/run-process.js';
import { TwoSites } from '../../harness/two-sites.js';
import { WanLink } from '../../harness/wan-link.js';
import { WAN_PROFILES } from '../../harness/wan-profile.js';
import type { PeerView } from '../../../src/sites/peer-record.js';

/*
 * Two real site servers over the emulated 100 Mbit/s, 50 ms WAN (issue 21): they pair by their
 * ordinary URLs (the emulator is transparent to addresses and certificates), each measures the
 * link's round trip, and a cut link shows the peer unreachable until it is restored.
 */

const profile = WAN_PROFILES['100m-50ms'];
let sites: TwoSites;
before(async () => {
  sites = await TwoSites.create({ wan: profile.name });
});
after(async () => {
  const middle = sites?.link instanceof WanLink ? sites.link.middle.name : undefined;
  await sites?.destroy();
  if (middle) assert.ok(!(await runProcess('ip', ['netns', 'list'])).stdout.includes(middle));
});

async function list(which: 'a' | 'b'): Promise<PeerView[]> {
  return sites.cliJson<PeerView[]>(which, 'site', 'list');
}

test('the sites pair both ways over the WAN and see its round trip', async () => {
  assert.ok(sites.link instanceof WanLink);
  assert.equal(sites.b.url, 'https://10.213.0.2:8443');
  await sites.pairBothWays();
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
    assert.ok(p.status.rttMs! >= profile.rttMs, `${which} measured ${p.status.rttMs} ms to ${peer}`);
  }
  const ping = await sites.cliJson<{ rttMs: number }>('a', 'site', 'ping', 'site-b');
  assert.ok(ping.rttMs >= profile.rttMs, `ping ${ping.rttMs} ms`);
});

for (const mode of ['blackhole', 'down', 'reset'] as const) {
  test(`a WAN cut (${mode}) shows the peer unreachable, and reachable once restored`, async () => {
    await sites.cutLink(mode);
    try {
      const peers = await list('a');
      assert.equal(peers[0]!.status.state, 'unreachable');
      assert.equal(peers[0]!.status.error?.code, 'PEER_UNREACHABLE');
      const ping = await sites.cli('b', 'site', 'ping', 'site-a');
      assert.equal(ping.code, 1);
      assert.match(ping.stderr, /\[PEER_UNREACHABLE\]/);
    } finally {
      await sites.restoreLink();
    }
    await sites.a.waitFor(
      'site-b reachable again',
      async () => (await list('a'))[0]!.status.state === 'reachable',
      60_000,
    );
  });
}
