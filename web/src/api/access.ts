import { api } from './client';

/** Who the console is signed in as, and what that role may call (the API's own x-roles). */
export interface Access {
  role: string;
  name: string;
  /** Whether the signed-in token's role may call this operation, e.g. can('post', '/vms/{name}/start'). */
  can(method: string, path: string): boolean;
}

type Doc = { paths: Record<string, Record<string, { 'x-roles'?: string[] }>> };

/**
 * The roles come from the site's OpenAPI document (each operation's x-roles, the table the API
 * enforces), so the console hides exactly what the API would refuse: one source of truth.
 * Hiding is a courtesy; the API refuses all the same.
 */
export async function loadAccess(): Promise<Access> {
  const [me, doc] = await Promise.all([api.get('/me'), fetch('/openapi.json').then((r) => r.json() as Promise<Doc>)]);
  return {
    role: me.role,
    name: me.name,
    can: (method, path) => (doc.paths[path]?.[method.toLowerCase()]?.['x-roles'] ?? []).includes(me.role),
  };
}
