import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, type Document } from 'yaml';
import { MamoriError } from '../core/mamori-error.js';
import { PLAN_LIMITS } from './plan-limits.js';
import { planTooLarge, pathOf, quote, short, type PlanProblems } from './plan-problems.js';

/** A value still to convert: the YAML node, where it goes (`into[key]`; null: the top), and the frame holding it. */
interface Frame {
  node: unknown;
  path: string;
  depth: number;
  parent: Frame | null;
  into: Record<string, unknown> | unknown[] | null;
  key: string | number;
}

/**
 * Reads plan text into plain data, bounded: the text's size first, then while converting,
 * every value (aliases counted each time they are used, so an alias bomb stops early), the
 * nesting and the aliases. Iterative, so nesting costs no stack. Mappings become objects
 * without a prototype: a key such as `__proto__` stays a key (checkPlanShape refuses it).
 * Problems of the document (a syntax error, a duplicate key, an alias to nothing) go to
 * `problems`; a limit exceeded throws PLAN_TOO_LARGE. `lineAt` gets the line of every path
 * (a key's own line for its path).
 */
export function readPlanYaml(
  text: string,
  source: string,
  problems: PlanProblems,
  lineAt: Map<string, number>,
): unknown {
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > PLAN_LIMITS.bytes) {
    throw planTooLarge(
      source,
      `a plan may be at most ${PLAN_LIMITS.bytes} bytes of text (this one has ${bytes}); split it into smaller plans`,
      { limit: 'bytes', max: PLAN_LIMITS.bytes, actual: bytes },
    );
  }
  const lines = new LineCounter();
  const lineOfNode = (node: unknown): number | null => {
    const range = (node as { range?: [number, number, number] } | null)?.range;
    return range ? lines.linePos(range[0]).line : null;
  };
  let doc: Document.Parsed;
  try {
    // uniqueKeys off: the library compares each key with every earlier one (quadratic: 5 s
    // for 30k keys); duplicates are found below with a set.
    doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  } catch (e) {
    // The library reports what it finds in doc.errors; a throw is its own failure, still the plan's to fix.
    throw new MamoriError(
      'INVALID_INPUT',
      `the plan is not valid, nothing was changed: ${source}: the YAML could not be read (${short(String(e), 200)})`,
      { cause: e },
    );
  }
  // The library's own bound (nesting deep enough to exhaust its stack) is ours too.
  if (doc.errors.some((e) => e.code === 'RESOURCE_EXHAUSTION')) {
    throw planTooLarge(
      source,
      `a plan nests mappings and lists at most ${PLAN_LIMITS.depth} deep (this one nests too deep to read)`,
      { limit: 'depth', max: PLAN_LIMITS.depth },
    );
  }
  if (doc.errors.length > 0) {
    for (const e of doc.errors)
      problems.add(
        '',
        short(e.message.split('\n')[0] ?? '', 200),
        e.linePos?.[0]?.line ?? lines.linePos(e.pos[0]).line,
      );
    return null;
  }

  let nodes = 0;
  /**
   * The aliases of the text, each once however often it is expanded, with the node it names:
   * the library finds that node by walking the document, too slow to repeat per expansion.
   */
  const aliases = new Map<unknown, unknown>();
  /** Counts n values; `ahead`: values about to be visited, so a huge list is refused before it is walked. */
  const count = (n: number, ahead = 0): void => {
    nodes += n;
    if (nodes + ahead > PLAN_LIMITS.nodes) {
      throw planTooLarge(
        source,
        `a plan may hold at most ${PLAN_LIMITS.nodes} values, aliases counted each time they are used (an alias that repeats a large value multiplies it)`,
        { limit: 'nodes', max: PLAN_LIMITS.nodes },
      );
    }
  };
  /** The node an alias names, or null (a problem) when it names nothing or the value holding it. */
  const resolve = (node: unknown, frame: Frame): unknown => {
    if (!isAlias(node)) return node;
    if (!aliases.has(node)) {
      if (aliases.size >= PLAN_LIMITS.aliases) {
        throw planTooLarge(source, `a plan may use at most ${PLAN_LIMITS.aliases} aliases (*name)`, {
          limit: 'aliases',
          max: PLAN_LIMITS.aliases,
        });
      }
      aliases.set(node, node.resolve(doc));
    }
    const target = aliases.get(node);
    if (target === undefined) {
      problems.add(
        frame.path,
        `alias *${short(node.source)} names no anchor (&${short(node.source)}) set before it`,
        lineOfNode(node),
      );
      return null;
    }
    for (let up = frame.parent; up !== null; up = up.parent) {
      if (up.node === target) {
        problems.add(
          frame.path,
          `alias *${short(node.source)} is inside the value it names, which would repeat without end`,
          lineOfNode(node),
        );
        return null;
      }
    }
    return target;
  };

  let root: unknown = null;
  const stack: Frame[] = [{ node: doc.contents, path: '', depth: 1, parent: null, into: null, key: '' }];
  while (stack.length > 0) {
    const frame = stack.pop()!;
    const set = (v: unknown): void => {
      if (frame.into === null) root = v;
      else (frame.into as Record<string | number, unknown>)[frame.key] = v;
    };
    count(1);
    const line = lineOfNode(frame.node);
    if (line !== null && !lineAt.has(frame.path)) lineAt.set(frame.path, line);
    const node = resolve(frame.node, frame);
    frame.node = node;
    if (isMap(node) || isSeq(node)) {
      if (frame.depth > PLAN_LIMITS.depth) {
        throw planTooLarge(
          source,
          `a plan nests mappings and lists at most ${PLAN_LIMITS.depth} deep (${frame.path || 'the top'} is deeper)`,
          { limit: 'depth', max: PLAN_LIMITS.depth },
        );
      }
    }
    const children: Frame[] = [];
    if (isMap(node)) {
      const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
      set(out);
      const keys = new Set<string>();
      count(node.items.length, node.items.length);
      for (const pair of node.items) {
        const keyNode = resolve(pair.key, frame);
        const keyLine = lineOfNode(pair.key) ?? lineOfNode(pair.value);
        const k = isScalar(keyNode) ? keyNode.value : undefined;
        if (typeof k !== 'string' && typeof k !== 'number' && typeof k !== 'boolean') {
          problems.add(
            frame.path,
            `a key${frame.path ? ` in ${frame.path}` : ''} must be a name (this one is ${isMap(keyNode) ? 'a mapping' : isSeq(keyNode) ? 'a list' : 'missing'})`,
            keyLine,
          );
          continue;
        }
        const key = String(k);
        const path = pathOf(frame.path, key);
        if (keys.has(key)) {
          problems.add(path, `key ${quote(key)} appears twice${frame.path ? ` in ${frame.path}` : ''}`, keyLine);
          continue;
        }
        keys.add(key);
        if (keyLine !== null) lineAt.set(path, keyLine);
        children.push({ node: pair.value, path, depth: frame.depth + 1, parent: frame, into: out, key });
      }
    } else if (isSeq(node)) {
      const out: unknown[] = [];
      set(out);
      count(0, node.items.length);
      node.items.forEach((item, i) =>
        children.push({
          node: item,
          path: pathOf(frame.path, i),
          depth: frame.depth + 1,
          parent: frame,
          into: out,
          key: i,
        }),
      );
    } else if (isScalar(node)) {
      const v = node.value;
      if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') set(v);
      else {
        problems.add(
          frame.path,
          `${frame.path || 'the plan'} is a kind of value plans do not use (${short(node.tag ?? typeof v)}); write text, a number, true or false`,
          line,
        );
        set(null);
      }
    } else if (node === null || node === undefined) {
      set(null);
    } else {
      problems.add(frame.path, `${frame.path || 'the plan'} is a kind of value plans do not use`, line);
      set(null);
    }
    // Reversed, so values are visited (and problems listed) in document order.
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]!);
  }
  return root;
}
