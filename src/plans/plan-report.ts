import type { PlanRun, RunStep } from './run-journal.js';
import { dataLossBasis, dataLossText, storedDataLoss, type DataLoss } from './data-loss-bounds.js';

/** The figures of a run that a report leads with. */
export interface RunSummary {
  run: string;
  plan: string;
  mode: string;
  state: string;
  result: string | null;
  startedAt: string;
  endedAt: string | null;
  durationSec: number | null;
  steps: { total: number; done: number; failed: number; skipped: number };
  vms: {
    vm: string;
    priority: number;
    point: string | null;
    rtoSec: number | null;
    dataLoss: DataLoss | null;
    ip: string | null;
    error: string | null;
  }[];
  /** The slowest VM's RTO: the plan's RTO. */
  rtoSec: number | null;
}

export function summarizeRun(run: PlanRun): RunSummary {
  const count = (s: RunStep['state']): number => run.steps.filter((x) => x.state === s).length;
  const vms = Object.values(run.vms)
    .sort((a, b) => a.priority - b.priority || a.vm.localeCompare(b.vm))
    .map((v) => ({
      vm: v.vm,
      priority: v.priority,
      point: v.point?.time ?? null,
      rtoSec: v.rtoSec ?? null,
      dataLoss: storedDataLoss(v),
      ip: v.ip ?? null,
      error: v.error ?? null,
    }));
  const rtos = vms.map((v) => v.rtoSec).filter((x): x is number => x !== null);
  return {
    run: run.id,
    plan: run.plan,
    mode: run.mode,
    state: run.state,
    result: run.result,
    startedAt: run.startedAt,
    endedAt: run.endedAt,
    durationSec: run.endedAt ? Math.round((Date.parse(run.endedAt) - Date.parse(run.startedAt)) / 100) / 10 : null,
    steps: { total: run.steps.length, done: count('done'), failed: count('failed'), skipped: count('skipped') },
    vms,
    rtoSec: rtos.length > 0 ? Math.max(...rtos) : null,
  };
}

/** Plain text lines for the CLI (and the demo). */
export function summaryText(run: PlanRun): string {
  const s = summarizeRun(run);
  const lines = [
    `run ${s.run}: ${s.mode} of plan ${s.plan}: ${s.result ?? s.state}${s.durationSec !== null ? ` in ${s.durationSec} s` : ''}` +
      ` (${s.steps.done} steps done, ${s.steps.failed} failed, ${s.steps.skipped} skipped of ${s.steps.total})`,
  ];
  if (s.rtoSec !== null) lines.push(`RTO ${s.rtoSec} s (slowest VM)`);
  for (const v of s.vms) {
    lines.push(
      `  p${v.priority} ${v.vm}: ${v.error ? `FAILED ${v.error}` : `point ${v.point ?? '-'}, RTO ${v.rtoSec ?? '-'} s, data loss ${dataLossText(v.dataLoss)}${v.ip ? `, IP ${v.ip}` : ''}`}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/** A self-contained HTML report: summary, per-VM figures, and every step with its times. */
export function renderRunHtml(run: PlanRun): string {
  const s = summarizeRun(run);
  const esc = (x: unknown): string =>
    String(x ?? '').replace(
      /[&<>"']/g,
      (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
    );
  const row = (cells: unknown[], tag = 'td'): string =>
    `<tr>${cells.map((c) => `<${tag}>${esc(c)}</${tag}>`).join('')}</tr>`;
  const vmRows = Object.values(run.vms)
    .sort((a, b) => a.priority - b.priority || a.vm.localeCompare(b.vm))
    .map((v) => {
      const loss = storedDataLoss(v);
      return row([
        v.priority,
        v.vm,
        v.point?.time ?? '-',
        v.rtoSec ?? '-',
        dataLossText(loss),
        v.dataLossNote ?? dataLossBasis(loss),
        v.ip ?? '-',
        v.error ?? 'ok',
      ]);
    });
  const stepRows = run.steps.map((st) =>
    row([st.id, st.label, st.state, st.startedAt ?? '', st.endedAt ?? '', st.message ?? '']),
  );
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mamori run ${esc(s.run)}</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
.success{color:#176f2c}.warnings{color:#8a6d00}.errors,.cancelled{color:#a01717}</style></head>
<body>
<h1>Plan ${esc(s.plan)}: ${esc(s.mode)} run ${esc(s.run)}</h1>
<p class="${esc(s.result ?? s.state)}"><strong>${esc(s.result ?? s.state)}</strong>: started ${esc(s.startedAt)}, ended ${esc(s.endedAt ?? '-')}${s.durationSec !== null ? ` (${esc(s.durationSec)} s)` : ''}; RTO ${esc(s.rtoSec ?? '-')} s.</p>
<h2>VMs</h2>
<table>${row(['priority', 'VM', 'recovery point', 'RTO (s)', 'data loss', 'data loss basis', 'IP', 'outcome'], 'th')}${vmRows.join('')}</table>
<h2>Steps</h2>
<table>${row(['id', 'step', 'outcome', 'start', 'end', 'message'], 'th')}${stepRows.join('')}</table>
</body></html>
`;
}
