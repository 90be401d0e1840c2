/** What the supervisor needs from the host: decided once, asked often. */
export interface HostRuntime {
  accel(): Promise<'kvm' | 'tcg'>;
  testGuest(firmware: 'bios' | 'uefi'): Promise<{ kernel: string; initrd: string }>;
  ovmf(): Promise<{ code: string; vars: string }>;
}
