/**
 * Which Linux a root filesystem holds, from the same files libguestfs reads and with its
 * distro names: /etc/os-release, else /etc/redhat-release (RHEL 6 and its rebuilds have no
 * os-release), /etc/debian_version; the hostname; the kernels under /boot.
 */
export interface LinuxRelease {
  distro: string;
  product: string;
  major: number | null;
  minor: number | null;
}

/** A minimal view of a root filesystem: small files and folder listings. */
export interface RootFs {
  readFile(path: string): Promise<Buffer | null>;
  listDir(path: string): Promise<{ name: string }[] | null>;
}

/** os-release IDs as libguestfs names the distros. */
const DISTRO_IDS: Record<string, string> = {
  rhel: 'rhel',
  centos: 'centos',
  fedora: 'fedora',
  debian: 'debian',
  ubuntu: 'ubuntu',
  rocky: 'rocky',
  almalinux: 'almalinux',
  ol: 'oraclelinux',
  opensuse: 'opensuse',
  'opensuse-leap': 'opensuse',
  'opensuse-tumbleweed': 'opensuse',
  sles: 'sles',
  sled: 'sles',
  arch: 'archlinux',
  alpine: 'alpinelinux',
  gentoo: 'gentoo',
  linuxmint: 'linuxmint',
  void: 'voidlinux',
  kali: 'kalilinux',
  amzn: 'amazonlinux',
};

/** `KEY=value` lines, values unquoted as the os-release format allows. */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2]!.trim();
    if ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'")))
      v = v.slice(1, -1).replace(/\\(["\\$`])/g, '$1');
    out[m[1]!] = v;
  }
  return out;
}

function version(text: string | undefined): { major: number | null; minor: number | null } {
  const m = /^(\d+)(?:\.(\d+))?/.exec(text ?? '');
  return m ? { major: Number(m[1]), minor: m[2] !== undefined ? Number(m[2]) : 0 } : { major: null, minor: null };
}

/** "Red Hat Enterprise Linux Server release 6.10 (Santiago)", "CentOS release 6.10 (Final)", "Fedora release 19 ...". */
export function parseRedhatRelease(line: string): LinuxRelease | null {
  const text = line.trim();
  const distro = /^Red Hat/.test(text)
    ? 'rhel'
    : /^CentOS/.test(text)
      ? 'centos'
      : /^Fedora/.test(text)
        ? 'fedora'
        : /^Scientific Linux/.test(text)
          ? 'scientificlinux'
          : /^Oracle Linux/.test(text)
            ? 'oraclelinux'
            : null;
  if (!distro) return null;
  const m = /release (\d+)(?:\.(\d+))?/.exec(text);
  return {
    distro,
    product: text,
    major: m ? Number(m[1]) : null,
    minor: m ? (m[2] !== undefined ? Number(m[2]) : 0) : null,
  };
}

export async function linuxRelease(fs: RootFs): Promise<LinuxRelease | null> {
  const text = async (p: string): Promise<string | null> => (await fs.readFile(p))?.toString('utf8') ?? null;
  const osRelease = (await text('/etc/os-release')) ?? (await text('/usr/lib/os-release'));
  if (osRelease !== null) {
    const kv = parseOsRelease(osRelease);
    const id = (kv['ID'] ?? '').toLowerCase();
    let v = version(kv['VERSION_ID']);
    // Debian's os-release says only "12": /etc/debian_version has the point release.
    if (id === 'debian') {
      const dv = version((await text('/etc/debian_version'))?.trim());
      if (dv.major !== null && dv.major === v.major) v = dv;
    }
    // Own keys only: an ID of "constructor" must not find Object's prototype.
    return {
      distro: (Object.hasOwn(DISTRO_IDS, id) ? DISTRO_IDS[id] : undefined) ?? (id || 'linux'),
      product: kv['PRETTY_NAME'] ?? kv['NAME'] ?? id,
      ...v,
    };
  }
  const rh = await text('/etc/redhat-release');
  if (rh !== null) {
    const parsed = parseRedhatRelease(rh.split('\n')[0] ?? '');
    if (parsed) return parsed;
  }
  const deb = await text('/etc/debian_version');
  if (deb !== null) return { distro: 'debian', product: `Debian ${deb.trim()}`, ...version(deb.trim()) };
  return null;
}

export async function linuxHostname(fs: RootFs): Promise<string | null> {
  const hn = (await fs.readFile('/etc/hostname'))?.toString('utf8').split('\n')[0]?.trim();
  if (hn) return hn;
  // RHEL 6 and older keep it in /etc/sysconfig/network.
  const net = (await fs.readFile('/etc/sysconfig/network'))?.toString('utf8');
  const m = net ? /^HOSTNAME=["']?([^"'\s]+)/m.exec(net) : null;
  return m ? m[1]! : null;
}

/** Kernel versions from /boot/vmlinuz-VERSION, newest name last. */
export async function linuxKernels(fs: RootFs): Promise<string[]> {
  const boot = await fs.listDir('/boot');
  return (boot ?? [])
    .map((e) => /^vmlinuz-(.+)$/.exec(e.name)?.[1])
    .filter((v): v is string => v !== undefined)
    .sort();
}

/** A root filesystem has /etc and one of the release files above. */
export async function looksLikeLinuxRoot(fs: RootFs): Promise<boolean> {
  for (const p of ['/etc/os-release', '/usr/lib/os-release', '/etc/redhat-release', '/etc/debian_version']) {
    if ((await fs.readFile(p)) !== null) return true;
  }
  return false;
}
