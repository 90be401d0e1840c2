import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import ts from 'typescript';
import { repoRoot } from '../../harness/repo-root.js';
import { parseCommand } from '../../../src/cli/parse-only.js';
import { incidentRemedy, kindsWithRemedies } from '../../../src/events/incident-remedies.js';

/*
 * Every `mamori …` command that text in src/ tells a person to run (incident remedies, error
 * messages naming the next command) is one the CLI accepts: each is parsed by the CLI's own
 * parser (src/cli/parse-only.ts: the real command code, stopped at its first API request),
 * and an unknown command, an unknown option or a missing argument fails here.
 */

/** A command named in a text: quoted ('mamori …', `mamori …`) or in parentheses ((mamori …)). */
const NAMED = /(['`(])mamori ([^'`()]+?)(?=['`)])/g;

export function namedCommands(text: string): string[] {
  return [...text.matchAll(NAMED)].map((m) => m[2]!.trim());
}

/** Words as a shell would split them; placeholders stay words (VM, SITE, X). */
function words(command: string): string[] {
  return command.split(/\s+/).filter(Boolean);
}

/** The text of every string literal in a source file, template substitutions as the placeholder X. */
function literals(file: string, source: string): { text: string; line: number }[] {
  const sf = ts.createSourceFile(file, source, ts.ScriptTarget.ES2022, true);
  const out: { text: string; line: number }[] = [];
  const visit = (n: ts.Node): void => {
    if (ts.isStringLiteral(n) || ts.isNoSubstitutionTemplateLiteral(n))
      out.push({ text: n.text, line: sf.getLineAndCharacterOfPosition(n.getStart()).line + 1 });
    else if (ts.isTemplateExpression(n)) {
      out.push({
        text: n.head.text + n.templateSpans.map((s) => `X${s.literal.text}`).join(''),
        line: sf.getLineAndCharacterOfPosition(n.getStart()).line + 1,
      });
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return out;
}

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sourceFiles(p)));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

async function refusal(command: string): Promise<string | null> {
  const r = await parseCommand(words(command));
  if (r.ok) return null;
  // A command that reads a named file (plan apply FILE) gets this far only with command and
  // options accepted: the file name in a text is a placeholder.
  if (r.code === 'INVALID_INPUT' && /^cannot read \S+: ENOENT/.test(r.message)) return null;
  return `${r.code}: ${r.message.split('\n')[0]}`;
}

test('the extractor finds commands in quotes and parentheses, and the parser refuses what the CLI refuses', async () => {
  assert.deepEqual(
    namedCommands("take a new point ('mamori replicate sync db') and see `mamori vm list` (mamori token list)"),
    ['replicate sync db', 'vm list', 'token list'],
  );
  // The command the RPO incident named before this test existed: no such subcommand.
  assert.match((await refusal('replicate sync db'))!, /INVALID_INPUT: unknown replicate command "sync"/);
  assert.match((await refusal('replicate sync-now db --force'))!, /^INVALID_INPUT|ERR_PARSE_ARGS/);
  assert.match(
    (await refusal('replicate enable db --to site-b --rpo 30s --speed 3'))!,
    /ERR_PARSE_ARGS_UNKNOWN_OPTION/,
  );
  assert.match((await refusal('serve --nmae x'))!, /ERR_PARSE_ARGS_UNKNOWN_OPTION/);
  assert.match((await refusal('frobnicate'))!, /unknown command "frobnicate"/);
  assert.equal(await refusal('replicate sync-now db'), null);
  assert.deepEqual(await parseCommand(['replicate', 'sync-now', 'db']), {
    ok: true,
    request: { method: 'POST', path: '/vms/db/replication/sync', body: {} },
  });
  assert.deepEqual(await parseCommand(['serve', '--data', '/x', '--name', 'a']), { ok: true, request: null });
});

test('every incident remedy names commands, and the CLI accepts each of them', async () => {
  const kinds = kindsWithRemedies();
  assert.ok(kinds.length >= 4, kinds.join(', '));
  for (const kind of kinds) {
    for (const details of [
      { vm: 'db', peer: 'site-b', jobId: 'job-1' },
      { peer: 'site-b', limit: 1, limitedBy: 'concurrency' },
      { peer: 'site-b', limit: 16, limitedBy: 'concurrency' },
      { peer: 'site-b', limit: 4, limitedBy: 'bandwidth' },
      null,
    ]) {
      const remedy = incidentRemedy({
        kind,
        target: kind.startsWith('site.')
          ? 'site:site-b'
          : kind === 'replication.journal-space'
            ? 'replica:rep-1'
            : 'vm:0b9e',
        details,
      });
      assert.ok(remedy, kind);
      const commands = namedCommands(remedy);
      assert.ok(commands.length > 0, `${kind}: its remedy names no command: ${remedy}`);
      for (const c of commands) assert.equal(await refusal(c), null, `${kind}: 'mamori ${c}'`);
    }
  }
  assert.equal(incidentRemedy({ kind: 'alert-test', target: 'site:a', details: null }), null);
});

test('every mamori command a string in src/ names is one the CLI accepts', async () => {
  const bad: string[] = [];
  let checked = 0;
  for (const file of await sourceFiles(join(repoRoot, 'src'))) {
    const rel = relative(repoRoot, file);
    for (const { text, line } of literals(file, await readFile(file, 'utf8'))) {
      for (const c of namedCommands(text)) {
        // A usage synopsis ("mamori vm <command>", "A|B", "[--opt]") describes commands; it names none.
        if (/[<>|[\]]|\.\.\./.test(c)) continue;
        checked++;
        const why = await refusal(c);
        if (why) bad.push(`${rel}:${line}: 'mamori ${c}': ${why}`);
      }
    }
  }
  assert.ok(checked >= 40, `only ${checked} commands found: is the extractor broken?`);
  assert.deepEqual(bad, []);
});
