import type { VmService } from '../vms/vm-service.js';
import { GuestAgent } from '../qemu/guest-agent.js';
import { MamoriError } from '../core/mamori-error.js';

/**
 * Powers a recovered VM on (or finishes a start a crash cut: QEMU launched but still paused)
 * and waits for its first sign of life since `notBefore` (the run's start, ms): a heartbeat line
 * on its serial console, or an answer from its guest agent. Returns when that was seen, or null
 * at the deadline.
 */
export async function powerOnAndWait(
  vms: VmService,
  vmId: string,
  waitSec: number,
  notBefore: number,
): Promise<string | null> {
  let vm = await vms.repo.findById(vmId);
  if (!vm) throw new MamoriError('VM_NOT_FOUND', `VM ${vmId} is gone`);
  if (vm.state === 'stopped' || vm.state === 'crashed') await vms.start(vm.name);
  else if (vm.state === 'paused') await vms.resume(vm.name);
  if (waitSec === 0) return null;
  const deadline = Date.now() + waitSec * 1000;
  for (;;) {
    vm = await vms.repo.findById(vmId);
    if (!vm) throw new MamoriError('VM_NOT_FOUND', `VM ${vmId} is gone`);
    const view = await vms.view(vm);
    // Only a heartbeat since the run began counts: the VM's id may have run here before a failover.
    if (view.lastHeartbeatAt !== null && view.lastHeartbeat !== null && Date.parse(view.lastHeartbeatAt) >= notBefore)
      return view.lastHeartbeatAt;
    if (vm.definition.guestAgent === true && vm.state === 'running') {
      const ga = await GuestAgent.connect(view.serialLog.replace(/serial\.log$/, 'qga.sock'), 1_000).catch(() => null);
      if (ga) {
        try {
          await ga.sync(2_000);
          return new Date().toISOString();
        } catch {
          // not up yet
        } finally {
          ga.close();
        }
      }
    }
    if (vm.state === 'crashed' || vm.state === 'stopped')
      throw new MamoriError(
        'VM_INVALID_STATE',
        `${vm.name} ${vm.state} before its first heartbeat${vm.stateReason ? `: ${vm.stateReason}` : ''}`,
      );
    if (Date.now() > deadline) return null;
    await sleep(500);
  }
}

/** Waits for the test guest's "mamori-guest ip <nic> <address>" line (it applied the config drive). */
export async function waitGuestIp(
  vms: VmService,
  name: string,
  address: string,
  deadline: number,
): Promise<string | null> {
  for (;;) {
    const lines = await vms.consoleTail(name, 500);
    if (lines.some((l) => l.includes('mamori-guest ip ') && l.trim().endsWith(` ${address}`))) return address;
    if (Date.now() > deadline) return null;
    await sleep(500);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
