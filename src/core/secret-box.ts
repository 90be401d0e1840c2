import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { MamoriError } from './mamori-error.js';

/** Sealed values start with this; anything else in a sealed column is a value from before sealing. */
export const SEALED_PREFIX = 'sb1:';
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/**
 * Secrets the site must be able to read back (a peer's token, an array password, the webhook
 * URL, the pairing key) are kept in the database sealed with a key that is never in the
 * database: DATA/secret.key. A copy of mamori.db alone then holds no credential.
 *
 * AES-256-GCM with a random 12-byte nonce per value (a key seals far fewer than 2^32 values,
 * so random nonces do not collide). The purpose (e.g. "peers.token:peer_x1") is the AAD: a
 * sealed value copied into another column or row does not open there, so an attacker who can
 * write the database cannot make the site send one peer's token to another.
 */
export class SecretBox {
  #key: Buffer;

  constructor(key: Buffer) {
    if (key.length !== KEY_BYTES)
      throw new MamoriError('SECRET_UNREADABLE', `the at-rest key must be ${KEY_BYTES} bytes, not ${key.length}`);
    this.#key = Buffer.from(key);
  }

  /** `sb1:` + base64(nonce | ciphertext | tag). */
  seal(purpose: string, plain: string | Buffer): string {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, nonce);
    cipher.setAAD(Buffer.from(purpose, 'utf8'));
    const body = Buffer.concat([
      cipher.update(typeof plain === 'string' ? Buffer.from(plain, 'utf8') : plain),
      cipher.final(),
    ]);
    return SEALED_PREFIX + Buffer.concat([nonce, body, cipher.getAuthTag()]).toString('base64');
  }

  /** The bytes sealed for this purpose; SECRET_UNREADABLE if the value was altered, moved, or sealed with another key. */
  open(purpose: string, sealed: string): Buffer {
    const unreadable = (why: string): MamoriError =>
      new MamoriError(
        'SECRET_UNREADABLE',
        `a sealed value for ${purpose} cannot be opened: ${why}. Was DATA/secret.key replaced, or the database edited? Restore both from the same backup`,
        { details: { purpose } },
      );
    if (!isSealed(sealed)) throw unreadable('it is not a sealed value');
    const raw = Buffer.from(sealed.slice(SEALED_PREFIX.length), 'base64');
    if (raw.length < NONCE_BYTES + TAG_BYTES) throw unreadable('it is too short');
    const decipher = createDecipheriv('aes-256-gcm', this.#key, raw.subarray(0, NONCE_BYTES));
    decipher.setAAD(Buffer.from(purpose, 'utf8'));
    decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
    try {
      return Buffer.concat([decipher.update(raw.subarray(NONCE_BYTES, raw.length - TAG_BYTES)), decipher.final()]);
    } catch {
      throw unreadable('it was altered, belongs to another column, or was sealed with another key');
    }
  }

  openString(purpose: string, sealed: string): string {
    return this.open(purpose, sealed).toString('utf8');
  }

  /** A value as stored: sealed ones opened, a clear one from before sealing returned as it is. */
  openOrClear(purpose: string, stored: string): string {
    return isSealed(stored) ? this.openString(purpose, stored) : stored;
  }
}

export function isSealed(value: string | null | undefined): value is string {
  return typeof value === 'string' && value.startsWith(SEALED_PREFIX);
}

/**
 * The site's at-rest key. Made (32 random bytes, 0600, 'wx' so two starts cannot both make
 * one) only when `mayCreate`: the caller says no when the database already holds sealed
 * values, because a new key would open none of them.
 */
export async function loadSecretKey(file: string, mayCreate: boolean): Promise<{ box: SecretBox; created: boolean }> {
  const existing = await readFile(file).catch((e: NodeJS.ErrnoException) =>
    e.code === 'ENOENT' ? null : Promise.reject(e),
  );
  if (existing) {
    if (existing.length !== KEY_BYTES)
      throw new MamoriError(
        'SECRET_UNREADABLE',
        `${file} holds ${existing.length} bytes, not the ${KEY_BYTES} of an at-rest key; restore it from your backup`,
        { details: { file } },
      );
    return { box: new SecretBox(existing), created: false };
  }
  if (!mayCreate) {
    throw new MamoriError(
      'SECRET_KEY_MISSING',
      `${file} is missing, and the database holds values sealed with it (peer tokens, the pairing key, array connections, the webhook URL): restore ${file} from your backup (the one taken with this database)`,
      { details: { file } },
    );
  }
  const key = randomBytes(KEY_BYTES);
  const fh = await open(file, 'wx', 0o600);
  try {
    await fh.writeFile(key);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return { box: new SecretBox(key), created: true };
}
