import { PLAN_LIMITS } from './plan-limits.js';
import { planTooLarge, pathOf, quote, type PlanProblems } from './plan-problems.js';

/** Keys that would change how JavaScript reads the plan rather than what it says. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/**
 * Checks a plan's data before its meaning, at any depth, the same for YAML (as readPlanYaml
 * made it) and the API's JSON: plain data only, no prototype names as keys (JSON.parse keeps
 * `__proto__` as an own key; read carelessly it becomes a prototype), no text longer than
 * PLAN_LIMITS.textChars. Values, nesting and lists are bounded (PLAN_TOO_LARGE); a cycle in
 * data handed over by code ends at the nesting limit. Iterative: nesting costs no stack.
 */
export function checkPlanShape(input: unknown, source: string, problems: PlanProblems): void {
  let nodes = 0;
  /** Counts n values; `ahead`: values about to be visited, so a huge list is refused before it is walked. */
  const count = (n: number, ahead = 0): void => {
    nodes += n;
    if (nodes + ahead > PLAN_LIMITS.nodes)
      throw planTooLarge(source, `a plan may hold at most ${PLAN_LIMITS.nodes} values`, {
        limit: 'nodes',
        max: PLAN_LIMITS.nodes,
      });
  };
  const stack: { value: unknown; path: string; depth: number }[] = [{ value: input, path: '', depth: 1 }];
  while (stack.length > 0) {
    const { value, path, depth } = stack.pop()!;
    count(1);
    if (typeof value === 'string') {
      if (value.length > PLAN_LIMITS.textChars)
        problems.add(
          path,
          `${path || 'the plan'} is ${value.length} characters long; text in a plan may be at most ${PLAN_LIMITS.textChars}`,
        );
      continue;
    }
    if (value === null || value === undefined || typeof value === 'number' || typeof value === 'boolean') continue;
    if (typeof value !== 'object') {
      problems.add(
        path,
        `${path || 'the plan'} is ${quote(value)}: a plan holds text, numbers, true or false, lists and mappings`,
      );
      continue;
    }
    if (depth > PLAN_LIMITS.depth) {
      throw planTooLarge(
        source,
        `a plan nests mappings and lists at most ${PLAN_LIMITS.depth} deep (${path || 'the top'} is deeper)`,
        { limit: 'depth', max: PLAN_LIMITS.depth },
      );
    }
    const children: { value: unknown; path: string; depth: number }[] = [];
    if (Array.isArray(value)) {
      count(0, value.length);
      value.forEach((v, i) => children.push({ value: v, path: pathOf(path, i), depth: depth + 1 }));
    } else {
      const proto = Object.getPrototypeOf(value) as unknown;
      if (proto !== Object.prototype && proto !== null) {
        problems.add(
          path,
          `${path || 'the plan'} is not plain data (a ${className(proto)}); a plan holds text, numbers, true or false, lists and mappings`,
        );
        continue;
      }
      const keys = Object.keys(value);
      count(keys.length, keys.length);
      for (const key of keys) {
        const p = pathOf(path, key);
        if (FORBIDDEN_KEYS.has(key))
          problems.add(
            p,
            `key ${quote(key)} is not allowed${path ? ` in ${path}` : ''}: it is not a plan setting, and would change how the plan is read`,
          );
        else if (key.length > PLAN_LIMITS.textChars)
          problems.add(
            p,
            `a key${path ? ` in ${path}` : ''} is ${key.length} characters long; text in a plan may be at most ${PLAN_LIMITS.textChars}`,
          );
        else children.push({ value: (value as Record<string, unknown>)[key], path: p, depth: depth + 1 });
      }
    }
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]!);
  }
}

function className(proto: unknown): string {
  const name = (proto as { constructor?: { name?: unknown } } | null)?.constructor?.name;
  return typeof name === 'string' && name.length > 0 && name.length <= 64 ? name : 'object of a class';
}
