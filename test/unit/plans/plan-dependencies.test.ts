import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkDependencies, type DependencyOptions } from '../../../src/plans/plan-dependencies.js';

function problems(vms: Record<string, DependencyOptions>): { path: string; message: string }[] {
  const out: { path: string; message: string }[] = [];
  checkDependencies(vms, (path, message) => void out.push({ path, message }));
  return out;
}

/** n VMs of one priority, each depending on the next; the last on the first when `ring`. */
function chain(n: number, ring: boolean): Record<string, DependencyOptions> {
  const vms: Record<string, DependencyOptions> = Object.create(null) as Record<string, DependencyOptions>;
  for (let i = 0; i < n; i++)
    vms[`vm${i}`] = { priority: 3, dependsOn: i + 1 < n ? [`vm${i + 1}`] : ring ? ['vm0'] : [] };
  return vms;
}

test('a 20,000-VM chain and a 20,000-VM cycle are walked without recursion, each reported once and briefly', () => {
  const long = problems(chain(20_000, false));
  assert.equal(long.length, 1);
  assert.match(
    long[0]!.message,
    /^a dependency chain may be at most 100 VMs long: vm0 -> vm1 -> .* -> vm19999 \(20000 VMs\)$/,
  );
  const ring = problems(chain(20_000, true));
  assert.equal(ring.length, 1);
  assert.equal(ring[0]!.path, 'vms.vm0.dependsOn');
  assert.match(ring[0]!.message, /^dependency cycle: vm0 -> vm1 -> .* -> vm0 \(20000 VMs\)$/);
});

test('each cycle is reported once; VMs waiting on a cycle are not cycles; other priorities are not edges', () => {
  const ps = problems({
    a: { priority: 2, dependsOn: ['b'] },
    b: { priority: 2, dependsOn: ['a'] },
    c: { priority: 2, dependsOn: ['a'] },
    x: { priority: 3, dependsOn: ['y', 'a'] },
    y: { priority: 3, dependsOn: ['x'] },
    z: { priority: 1, dependsOn: ['z'] },
  });
  assert.deepEqual(
    ps.map((p) => p.message),
    ['z depends on itself', 'dependency cycle: a -> b -> a', 'dependency cycle: x -> y -> x'],
  );
});
