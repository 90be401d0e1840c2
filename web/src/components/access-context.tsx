import { createContext, useContext, type ReactNode } from 'react';
import type { Access } from '../api/access';

const AccessContext = createContext<Access | null>(null);

export function AccessProvider({ access, children }: { access: Access; children: ReactNode }) {
  return <AccessContext.Provider value={access}>{children}</AccessContext.Provider>;
}

/** can(method, path): whether the signed-in role may call it (false until the roles are known). */
export function useCan(): (method: string, path: string) => boolean {
  const access = useContext(AccessContext);
  return (method, path) => access?.can(method, path) ?? false;
}
