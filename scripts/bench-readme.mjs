// Rewrites the table in bench/README.md from bench/results/*.json (the latest figures).
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** What tells a metric's rows apart: a disk, a receiver, a rate (and checkpoint interval), or the baseline a row is against. */
const label = (fig) =>
  fig.disk ??
  fig.receiver ??
  (fig.rate && fig.checkpoint ? `${fig.rate}, checkpoints ${fig.checkpoint}` : fig.rate) ??
  (fig.baselineName ? `vs ${fig.baselineName}` : null);

const bench = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench');
const rows = [];
for (const f of readdirSync(join(bench, 'results'))
  .filter((f) => f.endsWith('.json'))
  .sort()) {
  const r = JSON.parse(readFileSync(join(bench, 'results', f), 'utf8'));
  for (const fig of r.figures) {
    rows.push(
      `| ${r.name} | \`${fig.metric}\`${label(fig) ? ` (${label(fig)})` : ''} | ${fig.value} ${fig.unit} | ${fig.baseline ?? '-'} | **${fig.ratio}** | ${fig.goal} | ${fig.met === null ? 'report' : fig.met ? 'yes' : 'no'} | ${r.machine}, ${(fig.measuredAt ?? r.date).slice(0, 10)} |`,
    );
  }
}
const readme = join(bench, 'README.md');
const text = readFileSync(readme, 'utf8');
const table = [
  '| benchmark | figure | mamori | baseline | ratio | goal | met | measured |',
  '|---|---|---|---|---|---|---|---|',
  ...rows,
].join('\n');
writeFileSync(
  readme,
  text.replace(/<!-- figures -->[\s\S]*<!-- \/figures -->/, `<!-- figures -->\n${table}\n<!-- /figures -->`),
);
