import { strict as assert } from 'node:assert';
import { after, before, describe, it } from 'node:test';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostPathPolicy } from '../../../src/host/host-path-policy.js';
import { isMamoriError } from '../../../src/core/mamori-error.js';

/** nbd+unix:// sockets are host paths: inside an import folder, never the data folder, judged on the realpath. */
describe('HostPathPolicy.nbdSocket', () => {
  let root: string;
  const servers: Server[] = [];
  const listen = async (path: string): Promise<string> => {
    const s = createServer();
    servers.push(s);
    await new Promise<void>((r) => s.listen(path, r));
    return path;
  };
  let policy: HostPathPolicy;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'mamori-policy-'));
    for (const d of ['import', 'import/data', 'outside']) await mkdir(join(root, d));
    // The data folder inside the import folder: still refused.
    policy = new HostPathPolicy({
      dataDir: join(root, 'import', 'data'),
      allow: { importDirs: [join(root, 'import')] },
    });
    await listen(join(root, 'import', 'ok.sock'));
    await listen(join(root, 'import', 'data', 'daemon.sock'));
    await listen(join(root, 'outside', 'other.sock'));
    await symlink(join(root, 'outside', 'other.sock'), join(root, 'import', 'link.sock'));
    await writeFile(join(root, 'import', 'file.img'), 'x');
  });
  after(async () => {
    for (const s of servers) await new Promise((r) => s.close(r));
    await rm(root, { recursive: true, force: true });
  });

  const refused = async (p: unknown): Promise<void> => {
    await assert.rejects(
      policy.nbdSocket(p),
      (e: unknown) => isMamoriError(e, 'HOST_PATH_REFUSED') && /NBD server socket/.test(e.message),
    );
  };

  it('allows a socket inside an import folder, by its canonical path', async () => {
    const a = await policy.nbdSocket(join(root, 'import', 'ok.sock'));
    assert.equal(a.kind, 'socket');
    assert.equal(a.path, join(root, 'import', 'ok.sock'));
  });

  it('refuses the data folder, a socket outside, a symlink leading outside, a regular file, a missing path and non-paths alike', async () => {
    await refused(join(root, 'import', 'data', 'daemon.sock'));
    await refused(join(root, 'outside', 'other.sock'));
    await refused(join(root, 'import', 'link.sock'));
    await refused(join(root, 'import', 'file.img'));
    await refused(join(root, 'import', 'missing.sock'));
    await refused('relative.sock');
    await refused(42);
  });
});
