import { RegistryHive } from './registry-hive.js';

/**
 * Which Windows a filesystem holds, the way libguestfs decides it: a system root
 * (\Windows or \WINNT) whose System32\config holds both the SOFTWARE and SYSTEM hives;
 * product, version and build from SOFTWARE, the computer name and the installed drivers
 * from SYSTEM's current control set.
 */
export interface WindowsRelease {
  product: string;
  major: number | null;
  minor: number | null;
  build: string | null;
  /** "Server" or "Client" where the hive says. */
  installationType: string | null;
  edition: string | null;
  hostname: string | null;
  systemRoot: string;
  /** virtio drivers registered as services: what a conversion to virtio devices needs. */
  virtioDrivers: string[];
}

export interface WindowsFs {
  readFile(path: string): Promise<Buffer | null>;
  listDir(path: string): Promise<{ name: string }[] | null>;
}

const SYSTEM_ROOTS = ['/Windows', '/WINNT', '/WIN32', '/WINDOWS'];
const CURRENT_VERSION = 'Microsoft\\Windows NT\\CurrentVersion';
/** Red Hat's virtio-win service names: storage, SCSI, network, balloon, serial. */
const VIRTIO_SERVICES = ['viostor', 'vioscsi', 'netkvm', 'balloon', 'vioser'];

export async function windowsRelease(fs: WindowsFs): Promise<WindowsRelease | null> {
  for (const root of SYSTEM_ROOTS) {
    const software = await fs.readFile(`${root}/System32/config/SOFTWARE`);
    if (!software) continue;
    const system = await fs.readFile(`${root}/System32/config/SYSTEM`);
    if (!system) continue;
    return fromHives(RegistryHive.parse(software, 'SOFTWARE'), RegistryHive.parse(system, 'SYSTEM'), root);
  }
  return null;
}

export function fromHives(software: RegistryHive, system: RegistryHive, systemRoot: string): WindowsRelease {
  const product = software.string(CURRENT_VERSION, 'ProductName') ?? 'Windows';
  // Windows 10 and later keep "6.3" in CurrentVersion for old programs; the real numbers are DWORDs.
  let major = software.dword(CURRENT_VERSION, 'CurrentMajorVersionNumber');
  let minor = software.dword(CURRENT_VERSION, 'CurrentMinorVersionNumber');
  if (major === null) {
    const m = /^(\d+)\.(\d+)/.exec(software.string(CURRENT_VERSION, 'CurrentVersion') ?? '');
    major = m ? Number(m[1]) : null;
    minor = m ? Number(m[2]) : null;
  }
  const build =
    software.string(CURRENT_VERSION, 'CurrentBuildNumber') ?? software.string(CURRENT_VERSION, 'CurrentBuild');
  const current = system.dword('Select', 'Current');
  const controlSet = current !== null ? `ControlSet${String(current).padStart(3, '0')}` : null;
  const hostname = controlSet
    ? system.string(`${controlSet}\\Control\\ComputerName\\ComputerName`, 'ComputerName')
    : null;
  const services = controlSet ? (system.subkeys(`${controlSet}\\Services`) ?? []) : [];
  const lower = new Set(services.map((s) => s.toLowerCase()));
  return {
    product,
    major,
    minor: major !== null ? (minor ?? 0) : null,
    build,
    installationType: software.string(CURRENT_VERSION, 'InstallationType'),
    edition: software.string(CURRENT_VERSION, 'EditionID'),
    hostname,
    systemRoot,
    virtioDrivers: VIRTIO_SERVICES.filter((s) => lower.has(s)),
  };
}
