/**
 * The roles a token can have (what each may do: src/api/route-roles.ts). Here, below every
 * layer, because the store keeps them and the API enforces them.
 */
export const ROLES = ['admin', 'operator', 'viewer', 'site'] as const;
export type Role = (typeof ROLES)[number];

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}
