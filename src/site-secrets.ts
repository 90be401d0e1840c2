import { open, readFile, rm } from 'node:fs/promises';
import type { Logger } from './core/logger.js';
import type { SitePaths } from './core/site-paths.js';
import { loadSecretKey, type SecretBox } from './core/secret-box.js';
import type { Store } from './store/store.js';
import { TokenRepo } from './store/repos/token-repo.js';
import { PeerRepo } from './store/repos/peer-repo.js';
import { holdsSealedValues } from './store/sealed-values.js';
import { StorageArrays } from './adapters/storage-arrays.js';
import { AlertOutbox } from './events/alert-outbox.js';

/*
 * Start-up step 2 of src/main.ts: the site's secrets. The at-rest key, the admin token, and the
 * upgrade that seals what older versions kept in clear, before any service reads a secret.
 */

/**
 * The at-rest key and the tokens: the key is made only while the database holds nothing
 * sealed with one (SECRET_KEY_MISSING otherwise); the admin token at first start.
 */
export async function openSecrets(
  store: Store,
  paths: SitePaths,
  log: Logger,
): Promise<{ box: SecretBox; tokens: TokenRepo; createdAdminToken: string | null }> {
  const { box, created } = await loadSecretKey(paths.secretKey, !(await holdsSealedValues(store.handle)));
  if (created)
    log.info(
      { file: paths.secretKey },
      "at-rest key made: back it up with the database (the database's secrets are sealed with it)",
    );
  const tokens = new TokenRepo(store.handle, box);
  let createdAdminToken: string | null = null;
  if (!(await tokens.hasAdmin())) {
    createdAdminToken = await tokens.create('admin', 'admin');
    await writeSecret(paths.adminToken, createdAdminToken);
  }
  await sealLegacySecrets({ db: store.handle, box, tokens, paths, log });
  // A secret.key from another backup or site opens nothing here: say so now (SECRET_UNREADABLE),
  // not at the first pairing or peer call.
  await tokens.pairingKeys();
  await new PeerRepo(store.handle, box).list();
  return { box, tokens, createdAdminToken };
}

/**
 * Upgrade from before secrets were sealed: values kept in clear are sealed in place, and the
 * admin token's pairing key is made from DATA/admin-token when that file still matches it.
 */
async function sealLegacySecrets(d: {
  db: Store['handle'];
  box: SecretBox;
  tokens: TokenRepo;
  paths: SitePaths;
  log: Logger;
}): Promise<void> {
  const adminToken = await readFile(d.paths.adminToken, 'utf8').then(
    (t) => t.trim(),
    () => null,
  );
  const unkeyed = await d.tokens.sealMissingPairingKeys(adminToken);
  if (unkeyed > 0) {
    d.log.warn(
      { adminTokens: unkeyed },
      `an admin token made before pairing keys were sealed cannot be used to pair with this site (${d.paths.adminToken} is gone or holds another token): make a new admin token for pairing`,
    );
  }
  const peers = await new PeerRepo(d.db, d.box).sealClearTokens();
  const arrays = await new StorageArrays(d.db, d.box).sealClearConnections();
  const webhook = await new AlertOutbox(d.db, d.box).sealClearWebhook();
  if (peers + arrays > 0 || webhook)
    d.log.info(
      { peerTokens: peers, arrayConnections: arrays, webhook },
      'secrets kept in clear were sealed with the at-rest key',
    );
}

/** Written once with mode 0600; an existing file is replaced only when the database had no admin. */
async function writeSecret(path: string, secret: string): Promise<void> {
  await rm(path, { force: true });
  const fh = await open(path, 'wx', 0o600);
  try {
    await fh.writeFile(`${secret}\n`);
  } finally {
    await fh.close();
  }
}
