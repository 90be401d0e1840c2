import { MamoriError } from '../core/mamori-error.js';
import { assertValidName } from '../core/names.js';
import { isRole, type Role } from '../core/roles.js';
import type { TokenInfo, TokenRepo } from '../store/repos/token-repo.js';

/** Roles an admin may issue here; site tokens are made only by pairing (they name their peer). */
export const ISSUABLE_ROLES = ['admin', 'operator', 'viewer'] as const satisfies readonly Role[];

const UNITS_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000 };
/** A token that outlives this is a password in disguise: make a new one instead. */
const MAX_LIFETIME_MS = 5 * 365 * 86_400_000;

export interface CreateTokenInput {
  name: string;
  role: string;
  /** "30d", "12h", "90m"; absent: the token does not expire. */
  expires?: string;
}

/** `mamori token create|list|revoke`: the tokens an admin hands to people and scripts. */
export class TokenService {
  #tokens: TokenRepo;
  constructor(tokens: TokenRepo) {
    this.#tokens = tokens;
  }

  list(): Promise<TokenInfo[]> {
    return this.#tokens.list();
  }

  /** Returns the token in clear, once: only its hash is kept. */
  async create(input: CreateTokenInput, now = new Date()): Promise<TokenInfo & { token: string }> {
    assertValidName('token', input.name);
    if (!isRole(input.role) || !(ISSUABLE_ROLES as readonly string[]).includes(input.role)) {
      throw new MamoriError(
        'INVALID_INPUT',
        `role must be one of ${ISSUABLE_ROLES.join(', ')}${input.role === 'site' ? ": site tokens are issued by 'mamori site pair URL --token PEER_ADMIN_TOKEN'" : ''}`,
        { details: { role: String(input.role).slice(0, 32) } },
      );
    }
    const expiresAt =
      input.expires === undefined ? null : new Date(now.getTime() + lifetimeMs(input.expires)).toISOString();
    const { id, token } = await this.#tokens.createWithId(input.name, input.role, { expiresAt });
    const made = await this.#tokens.get(id);
    return { ...made!, token };
  }

  /** By id, or by name when exactly one token has it. */
  async revoke(idOrName: string): Promise<TokenInfo> {
    const all = await this.#tokens.list();
    const byId = all.find((t) => t.id === idOrName);
    const byName = all.filter((t) => t.name === idOrName);
    if (!byId && byName.length > 1)
      throw new MamoriError(
        'INVALID_INPUT',
        `${byName.length} tokens are named ${JSON.stringify(idOrName)}; revoke one by its id (mamori token list)`,
      );
    const t = byId ?? byName[0];
    if (!t)
      throw new MamoriError(
        'TOKEN_NOT_FOUND',
        `no token with id or name ${JSON.stringify(idOrName.slice(0, 64))}; see 'mamori token list'`,
      );
    if (t.role === 'site')
      throw new MamoriError(
        'TOKEN_IN_USE',
        `${t.name} is a paired site's token; unpair the site instead ('mamori site unpair NAME'), which revokes it on both sides`,
      );
    if (t.role === 'admin' && (await this.#tokens.liveAdminCount()) <= 1) {
      throw new MamoriError(
        'TOKEN_IN_USE',
        `${t.name} is the last admin token: create another admin token first, or the site cannot be managed any more`,
      );
    }
    await this.#tokens.revoke(t.id);
    return t;
  }
}

function lifetimeMs(text: string): number {
  const m = /^([1-9][0-9]{0,5})([mhd])$/.exec(typeof text === 'string' ? text.trim() : '');
  const ms = m ? Number(m[1]) * UNITS_MS[m[2]!]! : NaN;
  if (!(ms > 0) || ms > MAX_LIFETIME_MS)
    throw new MamoriError('OUT_OF_RANGE', 'expires must be a lifetime like 90m, 12h or 30d, at most 5 years (1825d)');
  return ms;
}
