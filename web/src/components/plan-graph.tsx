import type { PlanView } from '../api/domain';

const COL_W = 180;
const BOX_W = 130;
const BOX_H = 34;
const ROW_H = 56;
const TOP = 30;

/**
 * The plan as it runs: one column per priority group (left runs first), one box per VM,
 * an arrow from each VM to the VMs that wait for it (dependsOn).
 */
export function PlanGraph({ plan }: { plan: PlanView }) {
  const priorities = [...new Set(plan.vms.map((v) => v.priority))].sort((a, b) => a - b);
  const at = new Map<string, { x: number; y: number }>();
  priorities.forEach((p, col) => {
    plan.vms
      .filter((v) => v.priority === p)
      .forEach((v, row) => at.set(v.name, { x: 10 + col * COL_W, y: TOP + row * ROW_H }));
  });
  const rows = Math.max(1, ...priorities.map((p) => plan.vms.filter((v) => v.priority === p).length));
  const width = Math.max(1, priorities.length) * COL_W;
  const height = TOP + rows * ROW_H;
  return (
    <svg
      className="plan-graph"
      viewBox={`0 0 ${width} ${height}`}
      width={width}
      height={height}
      role="img"
      aria-label={`plan ${plan.name}`}
    >
      <defs>
        <marker
          id="arrow"
          viewBox="0 0 10 10"
          refX="9"
          refY="5"
          markerWidth="7"
          markerHeight="7"
          orient="auto-start-reverse"
        >
          <path d="M0,0 L10,5 L0,10 z" />
        </marker>
      </defs>
      {priorities.map((p, col) => (
        <text key={p} className="column-title" x={10 + col * COL_W} y={16}>
          priority {p}
        </text>
      ))}
      {plan.vms.flatMap((v) =>
        v.dependsOn.map((d) => {
          const from = at.get(d);
          const to = at.get(v.name);
          if (!from || !to) return null;
          // Same column: a curve out to the right; otherwise a straight arrow between the boxes' sides.
          const path =
            from.x === to.x
              ? `M${from.x + BOX_W},${from.y + BOX_H / 2} C${from.x + BOX_W + 40},${from.y + BOX_H / 2} ${to.x + BOX_W + 40},${to.y + BOX_H / 2} ${to.x + BOX_W},${to.y + BOX_H / 2}`
              : `M${from.x + BOX_W},${from.y + BOX_H / 2} L${to.x},${to.y + BOX_H / 2}`;
          return (
            <path
              key={`${d}-${v.name}`}
              className="dependency"
              d={path}
              markerEnd="url(#arrow)"
              data-from={d}
              data-to={v.name}
            />
          );
        }),
      )}
      {plan.vms.map((v) => {
        const p = at.get(v.name)!;
        return (
          <g key={v.name} className="vm-box" data-vm={v.name}>
            <rect x={p.x} y={p.y} width={BOX_W} height={BOX_H} rx={5} />
            <text x={p.x + 10} y={p.y + 21}>
              {v.name}
              {v.powerOn ? '' : ' (off)'}
            </text>
          </g>
        );
      })}
    </svg>
  );
}
