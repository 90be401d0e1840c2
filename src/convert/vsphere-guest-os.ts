import type { InspectedOs } from '../inspect/inspector.js';

/** What an OVF's OperatingSystemSection says: the CIM id, a description, and vSphere's guest id. */
export interface OvfGuestOs {
  cimId: number;
  description: string;
  /** vSphere's VirtualMachineGuestOsIdentifier (vmw:osType): what vSphere picks its defaults by. */
  vmwOsType: string;
}

/** CIM_OperatingSystem.OSType values used here; vSphere goes by vmw:osType, the id is for other readers. */
const CIM = {
  OTHER_64: 102,
  RHEL_64: 80,
  SLES_64: 85,
  UBUNTU_64: 94,
  DEBIAN_64: 96,
  LINUX_64: 101,
  CENTOS_64: 107,
  ORACLE_64: 109,
} as const;

export const FALLBACK_GUEST_OS: OvfGuestOs = {
  cimId: CIM.LINUX_64,
  description: 'Other Linux (64-bit)',
  vmwOsType: 'otherLinux64Guest',
};

/**
 * The vSphere guest id for an inspected guest, so an exported VM gets the right virtual
 * hardware defaults and VMware Tools in vSphere. Versioned ids exist for a known range of
 * releases only: a newer release takes the newest id vSphere 8 knows for its family (its
 * closest relative), an unknown Linux takes otherLinux64Guest, a disk without a guest OS too.
 */
export function vsphereGuestOs(os: InspectedOs): OvfGuestOs {
  if (os.type === 'windows') return windowsGuest(os);
  if (os.type !== 'linux') return FALLBACK_GUEST_OS;
  const major = os.major ?? 0;
  const product = os.product ?? os.distro ?? 'Linux';
  const versioned = (prefix: string, min: number, max: number, cimId: number, name: string): OvfGuestOs =>
    major >= min
      ? {
          cimId,
          description: `${name} ${Math.min(major, max)} (64-bit)`,
          vmwOsType: `${prefix}${Math.min(major, max)}_64Guest`,
        }
      : { ...FALLBACK_GUEST_OS, description: `${product} (64-bit)` };
  switch (os.distro) {
    case 'debian':
      return versioned('debian', 4, 12, CIM.DEBIAN_64, 'Debian GNU/Linux');
    case 'ubuntu':
      return { cimId: CIM.UBUNTU_64, description: 'Ubuntu Linux (64-bit)', vmwOsType: 'ubuntu64Guest' };
    case 'rhel':
      return versioned('rhel', 2, 9, CIM.RHEL_64, 'Red Hat Enterprise Linux');
    case 'centos':
      return versioned('centos', 6, 9, CIM.CENTOS_64, 'CentOS');
    case 'oraclelinux':
      return versioned('oracleLinux', 6, 9, CIM.ORACLE_64, 'Oracle Linux');
    case 'sles':
      return versioned('sles', 10, 15, CIM.SLES_64, 'SUSE Linux Enterprise');
    case 'opensuse':
      return { cimId: CIM.LINUX_64, description: 'openSUSE (64-bit)', vmwOsType: 'opensuse64Guest' };
    case 'fedora':
      return { cimId: CIM.LINUX_64, description: 'Fedora (64-bit)', vmwOsType: 'fedora64Guest' };
    case 'rocky':
      return { cimId: CIM.LINUX_64, description: 'Rocky Linux (64-bit)', vmwOsType: 'rockylinux_64Guest' };
    case 'almalinux':
      return { cimId: CIM.LINUX_64, description: 'AlmaLinux (64-bit)', vmwOsType: 'almalinux_64Guest' };
    case 'amazonlinux':
      return versioned('amazonlinux', 2, 3, CIM.LINUX_64, 'Amazon Linux');
    default:
      return { ...FALLBACK_GUEST_OS, description: `${product} (64-bit)` };
  }
}

/**
 * Windows by NT version and build, not by product name: Windows 11 still calls itself
 * "Windows 10" in its registry, and Server 2016, 2019, 2022 and 2025 are all NT 10.0.
 */
function windowsGuest(os: InspectedOs): OvfGuestOs {
  const server = /server/i.test(os.installationType ?? '') || /server/i.test(os.product ?? '');
  const nt = (os.major ?? 0) * 10 + (os.minor ?? 0);
  const build = Number(os.build ?? 0) || 0;
  const description = `${os.product ?? 'Microsoft Windows'} (64-bit)`;
  let id: string;
  if (server) {
    if (nt >= 100)
      id =
        build >= 26100
          ? 'windows2022srvNext_64Guest'
          : build >= 20348
            ? 'windows2019srvNext_64Guest'
            : build >= 17763
              ? 'windows2019srv_64Guest'
              : 'windows9Server64Guest';
    else if (nt >= 62) id = 'windows8Server64Guest';
    else if (nt === 61) id = 'windows7Server64Guest';
    else id = 'winLonghorn64Guest';
  } else {
    if (nt >= 100) id = build >= 22000 ? 'windows11_64Guest' : 'windows9_64Guest';
    else if (nt >= 62) id = 'windows8_64Guest';
    else if (nt === 61) id = 'windows7_64Guest';
    else id = 'winVista64Guest';
  }
  return { cimId: CIM.OTHER_64, description, vmwOsType: id };
}
