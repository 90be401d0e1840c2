import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { isMamoriError } from '../../../src/core/mamori-error.js';
import { buildStorageDaemonArgv } from '../../../src/qemu/storage-daemon.js';
import { chainNodeName } from '../../../src/qemu/daemon-chain.js';

/** The values following each occurrence of `flag`. */
function valuesOf(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag && argv[i + 1] !== undefined ? [argv[i + 1]!] : []));
}

describe('buildStorageDaemonArgv', () => {
  it('opens a chain bottom to top with explicit backing above the bottom, only the top writable, and exports it over TLS TCP', () => {
    const argv = buildStorageDaemonArgv({
      qmpSocket: '/run/a,b/qmp.sock',
      pidFile: '/run/qsd.pid',
      chains: [
        {
          id: 'r0',
          layers: [
            { file: '/r/base.qcow2', format: 'qcow2' },
            { file: '/r/p1.qcow2', format: 'qcow2' },
            { file: '/r/st.qcow2', format: 'qcow2' },
          ],
        },
      ],
      nbd: {
        listen: { type: 'inet', host: '10.0.0.2', port: 10809 },
        tls: { dir: '/pki/nbd', clientIdentity: 'CN=site-a' },
      },
      exports: [{ id: 'r0', node: 'r0', name: 'replica-r0', writable: true }],
    });
    assert.deepEqual(argv.slice(0, 7), [
      '--chardev',
      'socket,id=qmp0,path=/run/a,,b/qmp.sock,server=on,wait=off',
      '--monitor',
      'chardev=qmp0',
      '--pidfile',
      '/run/qsd.pid',
      '--daemonize',
    ]);
    assert.deepEqual(
      valuesOf(argv, '--object').map((v) => JSON.parse(v)),
      [
        { 'qom-type': 'tls-creds-x509', id: 'tls0', dir: '/pki/nbd', endpoint: 'server', 'verify-peer': true },
        { 'qom-type': 'authz-simple', id: 'authz0', identity: 'CN=site-a' },
      ],
    );
    const nodes = valuesOf(argv, '--blockdev').map((v) => JSON.parse(v) as Record<string, unknown>);
    assert.deepEqual(
      nodes.filter((n) => n['driver'] === 'qcow2'),
      [
        // The bottom's backing is whatever its header names, as for a VM's image (daemon-chain.ts).
        { driver: 'qcow2', file: 'r0-l0-file', 'node-name': 'r0-l0', 'read-only': true },
        { driver: 'qcow2', file: 'r0-l1-file', 'node-name': 'r0-l1', 'read-only': true, backing: 'r0-l0' },
        { driver: 'qcow2', file: 'r0-file', 'node-name': 'r0', 'read-only': false, backing: 'r0-l1' },
      ],
    );
    assert.deepEqual(
      nodes.filter((n) => n['driver'] === 'file').map((n) => [n['filename'], n['read-only']]),
      [
        ['/r/base.qcow2', true],
        ['/r/p1.qcow2', true],
        ['/r/st.qcow2', false],
      ],
    );
    assert.deepEqual(
      valuesOf(argv, '--nbd-server').map((v) => JSON.parse(v)),
      [{ addr: { type: 'inet', host: '10.0.0.2', port: '10809' }, 'tls-creds': 'tls0', 'tls-authz': 'authz0' }],
    );
    assert.deepEqual(
      valuesOf(argv, '--export').map((v) => JSON.parse(v)),
      [{ type: 'nbd', id: 'r0', 'node-name': 'r0', name: 'replica-r0', writable: true }],
    );
  });

  it('read-only chains with a raw base, a unix socket, bitmaps on exports, host devices', () => {
    const argv = buildStorageDaemonArgv({
      qmpSocket: '/q',
      pidFile: '/p',
      chains: [
        {
          id: 'd0',
          layers: [
            { file: '/dev/sdz', format: 'raw' },
            { file: '/o.qcow2', format: 'qcow2' },
          ],
          readOnly: true,
        },
      ],
      nbd: { listen: { type: 'unix', path: '/n.sock' }, maxConnections: 4 },
      exports: [{ id: 'e0', node: 'd0', bitmaps: ['mamori-2'] }],
    });
    const nodes = valuesOf(argv, '--blockdev').map((v) => JSON.parse(v) as Record<string, unknown>);
    assert.deepEqual(nodes[0], {
      driver: 'host_device',
      filename: '/dev/sdz',
      'node-name': 'd0-l0-file',
      'read-only': true,
    });
    assert.deepEqual(nodes[1], { driver: 'raw', file: 'd0-l0-file', 'node-name': 'd0-l0', 'read-only': true });
    assert.equal(nodes[3]?.['read-only'], true);
    assert.equal(valuesOf(argv, '--object').length, 0);
    assert.deepEqual(JSON.parse(valuesOf(argv, '--nbd-server')[0]!), {
      addr: { type: 'unix', path: '/n.sock' },
      'max-connections': 4,
    });
    assert.deepEqual(JSON.parse(valuesOf(argv, '--export')[0]!), {
      type: 'nbd',
      id: 'e0',
      'node-name': 'd0',
      name: 'e0',
      writable: false,
      bitmaps: ['mamori-2'],
    });
  });

  it('refuses a raw layer above the bottom and exports without a server', () => {
    const raw = () =>
      buildStorageDaemonArgv({
        qmpSocket: '/q',
        pidFile: '/p',
        chains: [
          {
            id: 'x',
            layers: [
              { file: '/a', format: 'qcow2' },
              { file: '/b', format: 'raw' },
            ],
          },
        ],
      });
    assert.throws(raw, (e) => isMamoriError(e, 'INVALID_INPUT'));
    const noServer = () =>
      buildStorageDaemonArgv({ qmpSocket: '/q', pidFile: '/p', chains: [], exports: [{ id: 'e', node: 'x' }] });
    assert.throws(noServer, (e) => isMamoriError(e, 'INVALID_INPUT'));
  });

  it('names the top node after the chain', () => {
    assert.equal(chainNodeName('c', 2, 3), 'c');
    assert.equal(chainNodeName('c', 0, 3), 'c-l0');
  });
});
