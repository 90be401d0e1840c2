/**
 * What this host offers a VM, as the host service reports it; the API's GET /host/info
 * answers it as is (api/routes/host.ts), so the type lives with the service, below the API.
 */
export interface HostInfoView {
  site: string;
  accelerator: { accel: 'kvm' | 'tcg'; reason: string; probeMs: number };
  qemu: { version: string; binary: string };
  machineTypes: { name: string; alias?: string; isDefault: boolean }[];
  ovmf: { code: string; vars: string } | null;
  testGuest: { available: boolean; dir: string };
}
