import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { formatNbdUri, looksLikeNbdUri, parseNbdUri, type NbdUri } from '../../../src/nbd/nbd-uri.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

describe('NBD URIs (NetworkBlockDevice/nbd doc/uri.md), parsed strictly', () => {
  const good: [string, NbdUri][] = [
    ['nbd://example.com', { transport: 'tcp', tls: false, exportName: '', host: 'example.com', port: 10809 }],
    ['nbd://example.com/', { transport: 'tcp', tls: false, exportName: '', host: 'example.com', port: 10809 }],
    [
      'nbd://Disk-Server.example.com:10810/disk0',
      { transport: 'tcp', tls: false, exportName: 'disk0', host: 'disk-server.example.com', port: 10810 },
    ],
    [
      'nbds://10.0.0.5:1/vm%2Fdisk%20one',
      { transport: 'tcp', tls: true, exportName: 'vm/disk one', host: '10.0.0.5', port: 1 },
    ],
    ['nbd://[fd00::1]:65535/x', { transport: 'tcp', tls: false, exportName: 'x', host: 'fd00::1', port: 65535 }],
    [
      'nbd://[::ffff:127.0.0.1]/',
      { transport: 'tcp', tls: false, exportName: '', host: '::ffff:127.0.0.1', port: 10809 },
    ],
    ['nbd://localhost/a/b', { transport: 'tcp', tls: false, exportName: 'a/b', host: 'localhost', port: 10809 }],
    ['NBD://h/e', { transport: 'tcp', tls: false, exportName: 'e', host: 'h', port: 10809 }],
    ['nbd+unix:///?socket=/run/nbd.sock', { transport: 'unix', tls: false, exportName: '', socket: '/run/nbd.sock' }],
    [
      'nbd+unix:///disk?socket=/tmp/x%20y/s.sock',
      { transport: 'unix', tls: false, exportName: 'disk', socket: '/tmp/x y/s.sock' },
    ],
    ['nbds+unix:///disk?socket=/s', { transport: 'unix', tls: true, exportName: 'disk', socket: '/s' }],
  ];
  for (const [text, want] of good) {
    it(`accepts ${text}`, () => {
      const got = parseNbdUri(text);
      assert.deepEqual(got, want);
      // The canonical form parses back to the same thing.
      assert.deepEqual(parseNbdUri(formatNbdUri(got)), want);
    });
  }

  const bad: [string, RegExp][] = [
    ['nbd:/host/x', /not SCHEME:\/\/AUTHORITY/],
    ['nbd:host', /not SCHEME:\/\/AUTHORITY/],
    ['http://host/x', /scheme http:\/\//],
    ['nbd+vsock://1:2/x', /scheme nbd\+vsock/],
    ['nbd+tcp://h/x', /scheme nbd\+tcp/],
    ['nbd://', /names no host/],
    ['nbd:///x', /names no host/],
    ['nbd://:10809/x', /names no host/],
    ['nbd://user@host/x', /user information/],
    ['nbd://user:pw@host/x', /user information/],
    ['nbd://host/x#frag', /fragment/],
    ['nbd://host/x?tls-certificates=/etc', /takes no query/],
    ['nbd://host:0/x', /port 0 is not 1 to 65535/],
    ['nbd://host:65536/x', /port 65536/],
    ['nbd://host:/x', /port is empty/],
    ['nbd://host:+80/x', /not a name|port/],
    ['nbd://host:1e3/x', /not a name|port/],
    ['nbd://host:123456/x', /port/],
    ['nbd://[fd00::1/x', /not a name|host/],
    ['nbd://[not-ip]/x', /not an IPv6 address|not a name/],
    ['nbd://fd00::1/x', /not a name|host/],
    ['nbd://ho_st/x', /not a host name/],
    ['nbd://-host/x', /not a host name/],
    ['nbd://999.1.1.1/x', /not a host name/],
    ['nbd://1.2.3/x', /not a host name/],
    ['nbd://host/%zz', /bad percent-escape/],
    ['nbd://host/a%00b', /NUL/],
    [`nbd://host/${'x'.repeat(4097)}`, /longer than 4096 bytes/],
    ['nbd://host /x', /spaces or control characters/],
    ['nbd://host/x\n', /spaces or control characters/],
    ['nbd://host\\x/y', /not a host name|not a name/],
    ['nbd+unix://host/x?socket=/s', /has no host/],
    ['nbd+unix:///x', /needs \?socket=PATH/],
    ['nbd+unix:///x?socket=rel/s', /not absolute/],
    ['nbd+unix:///x?socket=', /not absolute/],
    ['nbd+unix:///x?socket=/a/../etc/s', /not normalized/],
    ['nbd+unix:///x?socket=/a//s', /not normalized/],
    ['nbd+unix:///x?socket=/a/./s', /not normalized/],
    ['nbd+unix:///x?socket=/a/', /not normalized/],
    ['nbd+unix:///x?socket=/a%00b', /NUL/],
    ['nbd+unix:///x?socket=/s&socket=/t', /only query/],
    ['nbd+unix:///x?socket=/s&tls-psk-file=/k', /only query/],
    ['nbd+unix:///x?tls-certificates=/etc&socket=/s', /only query/],
    [`nbd+unix:///x?socket=/${'s'.repeat(107)}`, /longer than a unix socket address/],
  ];
  for (const [text, why] of bad) {
    it(`refuses ${JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}…` : text)}`, () => {
      assert.throws(
        () => parseNbdUri(text),
        (e: unknown) => {
          assert.ok(isMamoriError(e, 'NBD_URI_INVALID'), String(e));
          assert.match(e.message, why);
          return true;
        },
      );
    });
  }

  it('refuses what is not a string, and very long text', () => {
    for (const v of [undefined, null, 42, { toString: () => 'nbd://h/x' }])
      assert.throws(
        () => parseNbdUri(v),
        (e: unknown) => isMamoriError(e, 'NBD_URI_INVALID'),
      );
    assert.throws(() => parseNbdUri(`nbd://h/${'a'.repeat(9000)}`), /longer than 8192 characters/);
  });

  it('tells NBD URIs from file names, so none is opened as a file', () => {
    for (const t of ['nbd://h', 'nbds://h', 'nbd+unix:///x', 'NBD://h', 'nbd:/h', 'nbd+vsock://1'])
      assert.equal(looksLikeNbdUri(t), true, t);
    for (const t of ['/dev/sda', 'nbd.img', './nbd://x', 'disk.vmdk', 'nbdx://h'])
      assert.equal(looksLikeNbdUri(t), false, t);
  });

  it('formats the canonical form: default port left out, IPv6 bracketed, export escaped', () => {
    assert.equal(formatNbdUri(parseNbdUri('nbd://h:10809/a%20b')), 'nbd://h/a%20b');
    assert.equal(formatNbdUri(parseNbdUri('nbds://[fd00::1]:99')), 'nbds://[fd00::1]:99');
    assert.equal(formatNbdUri(parseNbdUri('nbd+unix:///?socket=/r/s')), 'nbd+unix:///?socket=%2Fr%2Fs');
  });
});
