/**
 * The RPO's sampler (product.ts): one process, inside the site's namespace, asks the site API for
 * a VM's replication status about every second at a random phase, and prints one line each:
 * `<now ms> <shippedAt ms or -1>`. One process for the whole run, where a CLI call a second
 * started a Node process a second on the 2 cores the pipeline shares with the guest.
 * Run: node lag-sampler.js DATA VM; it ends when its stdin closes.
 */
import { ApiClient, resolveSite } from '../../src/cli/api-client.js';

const [data, vm] = process.argv.slice(2);
if (!data || !vm) throw new Error('usage: lag-sampler DATA VM');
const api = new ApiClient(await resolveSite({ data }));
let running = true;
process.stdin.on('close', () => (running = false)).resume();
while (running) {
  const tick = Date.now();
  const s = await api.get('/vms/{name}/replication', { path: { name: vm } });
  const shipped = s.journal?.shippedAt ? Date.parse(s.journal.shippedAt) : -1;
  process.stdout.write(`${Date.now()} ${shipped}\n`);
  // A second apart on average, at a random phase: a fixed 1 s period would lock onto a 1 s
  // checkpoint clock and see the lag at one point of its sawtooth only.
  await new Promise((r) => setTimeout(r, Math.max(0, 500 + Math.random() * 1000 - (Date.now() - tick))));
}
