import type { PlanSpec } from './plan-spec.js';

/**
 * A plan as the API shows it (GET /plans/NAME). Its own file, with nothing but types around
 * it, because the web console type-checks against it without pulling in the services.
 */
export interface PlanView {
  name: string;
  protectedSite: string;
  spec: PlanSpec;
  /** The protected VMs the plan recovers, with their options (defaults filled in). */
  vms: { name: string; group: string | null; priority: number; powerOn: boolean; dependsOn: string[] }[];
  inventoryTakenAt: string;
  createdAt: string;
  updatedAt: string;
}
