import type { ArgvDisk, ArgvMachine, VmArgvInput } from './vm-argv-input.js';
import { tapName } from './tap-name.js';

export type { VmArgvInput, VmRuntimePaths } from './vm-argv-input.js';

/**
 * The one place a QEMU command line is made: a pure function of the VM definition,
 * checked by golden files (test/golden). A diff there is a deliberate change.
 *
 * QEMU starts daemonized (VMs outlive the server) and paused (-S), so the supervisor
 * attaches to QMP before the guest runs and misses no event.
 */
export function buildVmArgv(input: VmArgvInput): string[] {
  const { def, disks, paths } = input;
  const argv: string[] = [
    '-name',
    `guest=${def.name},debug-threads=on`,
    '-uuid',
    def.id,
    '-machine',
    machineOption(input),
    '-accel',
    input.accel,
    '-smp',
    String(def.vcpus),
    '-m',
    `${def.memoryMiB}M`,
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-chardev',
    `socket,id=qmp,path=${paths.qmpSocket},server=on,wait=off`,
    '-mon',
    'chardev=qmp,mode=control',
    '-chardev',
    `file,id=serial0,path=${paths.serialLog}`,
    '-device',
    'isa-serial,chardev=serial0',
    '-pidfile',
    paths.pidFile,
    '-daemonize',
    '-S',
    '-msg',
    'timestamp=on',
  ];
  if (def.firmware === 'uefi') {
    argv.push(
      '-blockdev',
      json({ driver: 'file', filename: input.ovmfCode, 'node-name': 'fw-code-file', 'read-only': true }),
      '-blockdev',
      json({ driver: 'raw', file: 'fw-code-file', 'node-name': 'fw-code', 'read-only': true }),
      '-blockdev',
      json({ driver: 'file', filename: paths.uefiVars, 'node-name': 'fw-vars-file' }),
      '-blockdev',
      json({ driver: 'raw', file: 'fw-vars-file', 'node-name': 'fw-vars' }),
    );
  }
  if (def.guestAgent === true) {
    if (!paths.guestAgentSocket) throw new Error('a VM with a guest agent needs guestAgentSocket in its runtime paths');
    argv.push(
      '-chardev',
      `socket,id=qga0,path=${paths.guestAgentSocket},server=on,wait=off`,
      '-device',
      'virtio-serial-pci,id=qga-serial',
      // The port name is what qemu-guest-agent looks for (/dev/virtio-ports/org.qemu.guest_agent.0).
      '-device',
      'virtserialport,bus=qga-serial.0,chardev=qga0,name=org.qemu.guest_agent.0',
    );
  }
  // A test guest boots its kernel directly; a boot index on a disk would make the BIOS try it first.
  const sata = def.diskBus === 'sata';
  if (sata && disks.length > 0) argv.push('-device', 'ahci,id=ahci0');
  disks.forEach((disk, i) => argv.push(...diskArgs(disk, i, def.boot.kind === 'disk' && i === 0, sata)));
  def.nics.forEach((nic, i) => {
    argv.push('-netdev', netdevOption(def.id, nic.network, i));
    argv.push('-device', `${nic.model},netdev=net${i},mac=${nic.mac},id=nic${i}`);
  });
  if (def.boot.kind === 'test-guest') {
    if (!input.testGuest) throw new Error('buildVmArgv: test-guest boot needs kernel and initrd paths');
    argv.push(
      '-kernel',
      input.testGuest.kernel,
      '-initrd',
      input.testGuest.initrd,
      '-append',
      testGuestCmdline(def, disks),
    );
  }
  return argv;
}

/**
 * A site network NIC gets a tap QEMU creates (and removes when it exits, so nothing is left
 * behind by a crash); the supervisor puts it on the network's bridge while QEMU is paused.
 */
function netdevOption(vmId: string, network: string, i: number): string {
  if (network === 'user') return `user,id=net${i},restrict=on`;
  if (network === 'none') return `hubport,id=net${i},hubid=${i}`;
  return `tap,id=net${i},ifname=${tapName(vmId, i)},script=no,downscript=no`;
}

function machineOption(input: VmArgvInput): string {
  const parts = [input.def.machineType];
  if (input.def.firmware === 'uefi') parts.push('pflash0=fw-code', 'pflash1=fw-vars');
  return parts.join(',');
}

/**
 * Image disks get a protocol node and a format node; RDM disks only the protocol node,
 * so the guest sees the device's bytes with no image format in between. Snapshot
 * overlays stack on top as qcow2 nodes with an explicit backing node (as libvirt does),
 * so nothing depends on backing paths written in image headers.
 * The node the guest's device sits on is always disk<i>: later block jobs (replication,
 * migration) address it; lower layers are disk<i>-l<k>.
 */
function diskArgs(disk: ArgvDisk, i: number, bootable: boolean, sata = false): string[] {
  const top = `disk${i}`;
  const layers = 1 + disk.overlays.length;
  const nodeOf = (k: number): string => (k === layers - 1 ? top : `disk${i}-l${k}`);
  const isRdm = disk.kind === 'rdm';
  const args: string[] = [];
  const base = nodeOf(0);
  // Layers below the top are opened read-only, as libvirt opens backing images: QEMU then holds
  // no write lock on them, so other readers of the same file (a desktop pool's replica linked to
  // a snapshot's layer: pools/pool-replica.ts) can run beside this VM. The protocol node is
  // auto-read-only: a block-commit into the layer (a live snapshot delete) reopens it writable.
  const lower = (k: number): Record<string, unknown> => (k < layers - 1 ? { 'read-only': true } : {});
  const lowerFile = (k: number): Record<string, unknown> => (k < layers - 1 ? { 'auto-read-only': true } : {});
  args.push(
    '-blockdev',
    json({
      driver: isRdm && disk.path.startsWith('/dev/') ? 'host_device' : 'file',
      filename: disk.path,
      'node-name': isRdm ? base : `${base}-file`,
      // Physical RDM: the guest owns the device, so bypass the host page cache.
      cache: { direct: isRdm && disk.rdmMode === 'physical' },
      discard: 'unmap',
      ...(isRdm ? { ...lowerFile(0), ...lower(0) } : lowerFile(0)),
    }),
  );
  if (!isRdm)
    args.push(
      '-blockdev',
      json({ driver: disk.format, file: `${base}-file`, 'node-name': base, discard: 'unmap', ...lower(0) }),
    );
  disk.overlays.forEach((overlay, j) => {
    const node = nodeOf(j + 1);
    args.push(
      '-blockdev',
      json({ driver: 'file', filename: overlay, 'node-name': `${node}-file`, discard: 'unmap', ...lowerFile(j + 1) }),
      '-blockdev',
      json({
        driver: 'qcow2',
        file: `${node}-file`,
        backing: nodeOf(j),
        'node-name': node,
        discard: 'unmap',
        ...lower(j + 1),
      }),
    );
  });
  const device = sata
    ? ['ide-hd', `drive=${top}`, `bus=ahci0.${i}`, `id=${top}-dev`, `serial=${diskSerial(disk)}`]
    : ['virtio-blk-pci', `drive=${top}`, `id=${top}-dev`, `serial=${diskSerial(disk)}`];
  // A host I/O error pauses the VM and the supervisor retries it (vms/io-error-resume.ts), rather
  // than fail the guest's request: a guest filesystem that meets EIO goes read-only. A physical
  // RDM is the guest's own device: its errors are the guest's to handle, as on real hardware.
  if (!(isRdm && disk.rdmMode === 'physical')) device.push('werror=stop', 'rerror=stop');
  // share-rw lets a second VM open the same device for writing (guest clusters).
  if (disk.shared) device.push('share-rw=on');
  if (bootable) device.push('bootindex=1');
  return [...args, '-device', device.join(',')];
}

/** The test guest reads its write-log settings from the kernel command line. */
function testGuestCmdline(def: ArgvMachine, disks: ArgvDisk[]): string {
  if (def.boot.kind !== 'test-guest') return '';
  const parts = ['console=ttyS0', 'panic=-1', 'quiet', `mamori.acpi=${def.boot.acpi ? 1 : 0}`];
  const bench = def.boot.diskbench;
  // Disks by serial, in attachment order, as the write log finds its disk.
  if (bench)
    return [
      ...parts,
      `mamori.diskbench=${disks.map((d) => `serial:${diskSerial(d)}`).join(',')}`,
      `mamori.diskbench_mib=${bench.mib}`,
      `mamori.diskbench_secs=${bench.seconds}`,
    ].join(' ');
  // The write log goes to the first disk, found by its virtio serial rather than a device
  // name, so the guest never writes the log onto the wrong disk if probing order changes.
  if (disks[0] && def.boot.writelog !== false)
    parts.push(
      `mamori.wl=serial:${diskSerial(disks[0])}`,
      `mamori.wl_rate=${def.boot.writelogRate}`,
      ...(def.boot.writelogPayload === 'text' ? ['mamori.wl_payload=text'] : []),
    );
  return parts.join(' ');
}

/** virtio-blk serials hold at most 20 bytes. */
function diskSerial(disk: ArgvDisk): string {
  return disk.id.slice(0, 20);
}

function json(v: unknown): string {
  return JSON.stringify(v);
}
