import { MamoriError } from '../core/mamori-error.js';
import { quote, short, QUOTE_CHARS } from '../core/quote-input.js';

export { quote, short, QUOTE_CHARS };

export interface PlanProblem {
  /** Where in the document, e.g. `vms.db1.priority`. */
  path: string;
  /** 1-based line in the YAML, when it came from YAML. */
  line: number | null;
  message: string;
}

/** Problems listed in an error; the rest are counted. A person fixes a plan a few problems at a time. */
export const MAX_PROBLEMS_LISTED = 50;
/** `parent.key`, the key cut like a quote: paths are echoed in details too. */
export function pathOf(parent: string, key: string | number): string {
  const k = typeof key === 'number' ? String(key) : short(key);
  return parent ? `${parent}.${k}` : k;
}

/**
 * The problems of one plan: each listed once (a dependency named three times is one problem),
 * the first MAX_PROBLEMS_LISTED kept, the rest counted, so the error stays small whatever
 * the plan.
 */
export class PlanProblems {
  #lineOf: (path: string) => number | null;
  #seen = new Set<string>();
  #listed: PlanProblem[] = [];
  #more = 0;

  constructor(lineOf: (path: string) => number | null = () => null) {
    this.#lineOf = lineOf;
  }

  get count(): number {
    return this.#listed.length + this.#more;
  }

  add(path: string, message: string, line: number | null = this.#lineOf(path)): void {
    const key = `${path}\u0000${message}`;
    if (this.#seen.has(key)) return;
    this.#seen.add(key);
    if (this.#listed.length < MAX_PROBLEMS_LISTED) this.#listed.push({ path, line, message });
    else this.#more += 1;
  }

  /** The error for these problems: INVALID_INPUT, as for every problem of a plan's own structure. */
  error(source: string): MamoriError {
    const text = this.#listed
      .map((p) => `${source}${p.line === null ? '' : ` line ${p.line}`}: ${p.message}`)
      .join('; ');
    const more = this.#more > 0 ? `; and ${this.#more} more problems` : '';
    const details: Record<string, unknown> = { problems: this.#listed };
    if (this.#more > 0) details['more'] = this.#more;
    return new MamoriError('INVALID_INPUT', `the plan is not valid, nothing was changed: ${text}${more}`, { details });
  }
}

/**
 * A plan over one of PLAN_LIMITS: thrown at once, since the rest of such a plan is not worth
 * reading. `what` names the limit ("a plan may name at most 2000 VMs ...") and what to do.
 */
export function planTooLarge(
  source: string,
  what: string,
  details: { limit: string; max: number; actual?: number },
): MamoriError {
  return new MamoriError('PLAN_TOO_LARGE', `${source} is too large, nothing was changed: ${what}`, { details });
}
