import { jsonShape, type JsonShape } from '../store/json-column.js';

/**
 * What is done with a job the server was running when it died:
 * - `rollback`: the kind's rule undoes the steps that ran (a cycle, a migration, a conversion:
 *   half of one is worth nothing, and running it again from the start is cheap and safe);
 * - `resume`: the work is taken up where it stopped (a plan run, a pool operation: each step
 *   done is worth keeping, and undoing a failover or a hundred desktops would be the harm).
 */
export type RecoveryPolicy = 'rollback' | 'resume';
export const RECOVERY_POLICIES: readonly RecoveryPolicy[] = ['rollback', 'resume'];

/**
 * A job kind as the journal knows it: its steps, its recovery policy, and the shape of the
 * context its recovery reads, with a version. A context is written with the kind's version
 * and read back through its schema: one written by an older version goes through `upgrade`
 * (version N's value to N+1's) or is refused (JOB_CONTEXT_VERSION), never read as if it had
 * today's shape. Bump `version` and add an upgrade whenever the context's shape changes.
 */
export interface JobKindSpec<C> {
  readonly kind: string;
  readonly policy: RecoveryPolicy;
  /** The steps in order; null where each job decides its own (a pool operation, a plan run). */
  readonly steps: readonly string[] | null;
  readonly context: {
    readonly version: number;
    /** JSON schema of this version's context. */
    readonly schema: object;
    /** By the version a value was written with: that value made into the next version's. */
    readonly upgrade?: Readonly<Record<number, (old: unknown) => unknown>>;
  };
  /** One line for `mamori job kinds` and the docs: what a job of this kind does. */
  readonly summary: string;
}

export interface JobKind<C> extends JobKindSpec<C> {
  readonly shape: JsonShape<C>;
}

/** Declares a kind (a module constant beside the service that runs it). */
export function defineJobKind<C>(spec: JobKindSpec<C>): JobKind<C> {
  if (!Number.isInteger(spec.context.version) || spec.context.version < 1)
    throw new Error(`job kind ${spec.kind}: context version must be a positive integer`);
  return { ...spec, shape: jsonShape<C>(`jobs.context of ${spec.kind} v${spec.context.version}`, spec.context.schema) };
}

/** A context with no fields (kinds whose recovery reads only the job's target and steps). */
export const NO_CONTEXT = { version: 1, schema: { type: 'null' } } as const;
