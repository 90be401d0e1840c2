import { createHash } from 'node:crypto';
import { access, copyFile, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { MamoriError } from '../core/mamori-error.js';
import { runProcess } from '../core/run-process.js';

/**
 * Modules the test guest loads, by module name. Soft dependencies that
 * modules.dep does not list come first: crc_t10dif, crc64_rocksoft and
 * libcrc32c look up a crypto algorithm at load time, and only the generic
 * implementations work on TCG's default CPU (no SSE4.2/PCLMUL).
 */
export const GUEST_MODULES = [
  'crct10dif_generic',
  'crc64_rocksoft_generic',
  'crc32c_generic',
  'libcrc32c',
  'virtio_pci',
  'virtio_blk',
  'virtio_net',
  'virtio_console',
  'virtio_scsi',
  'sd_mod',
  'ahci',
  'ata_piix',
  // The ACPI power button is an input device: acpid reads it through evdev.
  'button',
  'evdev',
  // The cloud-init NoCloud config drive (IP customization) is an ISO 9660 volume.
  'isofs',
] as const;

export interface KernelPackage {
  name: string;
  version: string;
}

export interface PreparedKernel {
  package: KernelPackage;
  /** uname -r of the guest, e.g. 6.1.0-56-amd64 */
  kernelVersion: string;
  vmlinuz: string;
  /** The uncompressed ELF kernel, or null when it could not be extracted. */
  vmlinuxPvh: string | null;
  /** Absolute paths of the .ko files, in the order they must be loaded. */
  modules: string[];
}

const APT_QUIET = ['-o', 'APT::Sandbox::User=root', '-q'];

/** Name and version of the package linux-image-amd64 depends on, in one apt-cache call (each costs ~1.3 s). */
async function metapackageTarget(): Promise<KernelPackage | null> {
  try {
    const { stdout } = await runProcess('apt-cache', ['show', '--no-all-versions', 'linux-image-amd64'], {
      timeoutMs: 60_000,
    });
    const m = /^Depends:.*?\b(linux-image-6\.1\.\S+-amd64) \(= ([^)\s]+)\)/m.exec(stdout);
    return m ? { name: m[1] as string, version: m[2] as string } : null;
  } catch {
    return null;
  }
}

/**
 * The current Debian 12 kernel package (linux-image-amd64 points at it). Runs
 * apt-get update once when apt's lists are empty, as on a fresh machine.
 */
export async function resolveKernelPackage(): Promise<KernelPackage> {
  let pkg = await metapackageTarget();
  if (!pkg) {
    await runProcess('apt-get', [...APT_QUIET, 'update'], { timeoutMs: 10 * 60_000 }).catch((err: unknown) => {
      throw new MamoriError(
        'TEST_GUEST_MISSING',
        `apt-get update failed, so the guest kernel package cannot be found: ${(err as Error).message}`,
        { cause: err },
      );
    });
    pkg = await metapackageTarget();
  }
  if (!pkg) {
    throw new MamoriError(
      'TEST_GUEST_MISSING',
      'apt knows no linux-image-6.1.*-amd64 behind linux-image-amd64: the test guest needs Debian 12 (bookworm) package lists',
    );
  }
  return pkg;
}

/**
 * Changes whenever apt's package lists do (apt-get update), so a build can
 * tell without asking apt-cache that the kernel it used is still current.
 */
export async function aptListsFingerprint(): Promise<string> {
  const dir = '/var/lib/apt/lists';
  const names = (await readdir(dir).catch(() => [] as string[]))
    .filter((n) => n !== 'lock' && n !== 'partial' && n !== 'auxfiles')
    .sort();
  const hash = createHash('sha256');
  for (const n of names) {
    const st = await stat(join(dir, n)).catch(() => null);
    if (st) hash.update(`${n}\0${st.size}\0${st.mtimeMs}\n`);
  }
  return hash.digest('hex');
}

function moduleName(path: string): string {
  return basename(path)
    .replace(/\.ko(\.xz|\.zst|\.gz)?$/, '')
    .replace(/-/g, '_');
}

/** Load order for `wanted` from modules.dep text: every module after all it depends on. */
export function moduleLoadOrder(
  modulesDep: string,
  wanted: readonly string[],
  builtin: ReadonlySet<string> = new Set(),
): string[] {
  const deps = new Map<string, string[]>();
  const byName = new Map<string, string>();
  for (const line of modulesDep.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const path = line.slice(0, colon);
    deps.set(
      path,
      line
        .slice(colon + 1)
        .trim()
        .split(/\s+/)
        .filter(Boolean),
    );
    byName.set(moduleName(path), path);
  }
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (path: string): void => {
    if (seen.has(path)) return;
    seen.add(path);
    for (const d of deps.get(path) ?? []) visit(d);
    order.push(path);
  };
  for (const want of wanted) {
    const name = want.replace(/-/g, '_');
    const path = byName.get(name);
    if (path) visit(path);
    else if (!builtin.has(name)) {
      throw new MamoriError('TEST_GUEST_MISSING', `kernel module ${want} is neither in modules.dep nor built in`, {
        details: { module: want },
      });
    }
  }
  return order;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Compressed modules are unpacked on the host so the guest's insmod needs no decompressor. */
async function plainModule(root: string, relPath: string): Promise<string> {
  const abs = join(root, relPath);
  if (abs.endsWith('.xz')) {
    await runProcess('xz', ['-d', '-k', '-f', abs]);
    return abs.slice(0, -3);
  }
  if (abs.endsWith('.zst')) {
    await runProcess('zstd', ['-q', '-d', '-f', abs]);
    return abs.slice(0, -4);
  }
  if (abs.endsWith('.gz')) {
    await runProcess('gzip', ['-d', '-k', '-f', abs]);
    return abs.slice(0, -3);
  }
  return abs;
}

/** Bump when what the cache holds changes. */
const CACHE_LAYOUT = 2;

const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

/**
 * Unpacks the ELF kernel from Debian's XZ bzImage. Under TCG the XZ
 * decompressor in the boot stub costs ~4 s of every boot; QEMU boots the ELF
 * directly through its PVH entry (CONFIG_PVH=y), and the guest is ready in
 * ~6 s instead of ~10 s. Best effort: false when the image is not XZ.
 */
export async function extractPvhKernel(bzImage: string, out: string): Promise<boolean> {
  const image = await readFile(bzImage);
  const at = image.indexOf(XZ_MAGIC);
  if (at < 0) return false;
  const xzFile = `${out}.xz`;
  try {
    await writeFile(xzFile, image.subarray(at));
    // --single-stream: the bzImage goes on after the compressed kernel.
    await runProcess('xz', ['-d', '--single-stream', '-f', xzFile], { timeoutMs: 5 * 60_000 });
    const elf = await readFile(out);
    return elf.readUInt32BE(0) === 0x7f454c46;
  } catch {
    await rm(out, { force: true });
    return false;
  } finally {
    await rm(xzFile, { force: true });
  }
}

/**
 * Downloads and unpacks the kernel package, keeping only vmlinuz and the
 * modules the guest loads under cacheDir, so that rebuilding the initramfs after
 * a change of the writer or /init takes no download.
 */
export async function prepareKernel(pkg: KernelPackage, cacheDir: string): Promise<PreparedKernel> {
  const key = createHash('sha256')
    .update(JSON.stringify([CACHE_LAYOUT, pkg, GUEST_MODULES]))
    .digest('hex')
    .slice(0, 12);
  const finalDir = join(cacheDir, `${pkg.name}_${pkg.version}_${key}`.replace(/[^A-Za-z0-9._+-]/g, '_'));
  const manifestPath = join(finalDir, 'kernel.json');
  if (await exists(manifestPath)) {
    const m = JSON.parse(await readFile(manifestPath, 'utf8')) as {
      kernelVersion: string;
      modules: string[];
      vmlinuxPvh: boolean;
    };
    return {
      package: pkg,
      kernelVersion: m.kernelVersion,
      vmlinuz: join(finalDir, 'vmlinuz'),
      vmlinuxPvh: m.vmlinuxPvh ? join(finalDir, 'vmlinux') : null,
      modules: m.modules.map((f) => join(finalDir, 'modules', f)),
    };
  }

  const work = await mkdtemp(join(tmpdir(), 'mamori-guest-kernel-'));
  try {
    try {
      // apt-get download writes into its working directory.
      await runProcess('apt-get', [...APT_QUIET, 'download', `${pkg.name}=${pkg.version}`], {
        cwd: work,
        timeoutMs: 20 * 60_000,
      });
    } catch (err) {
      throw new MamoriError(
        'TEST_GUEST_MISSING',
        `could not download ${pkg.name}=${pkg.version}: ${(err as Error).message}. Check that Debian's mirror is reachable.`,
        {
          cause: err,
          details: { package: pkg },
        },
      );
    }
    const deb = (await readdir(work)).find((f) => f.endsWith('.deb'));
    if (!deb) throw new MamoriError('TEST_GUEST_MISSING', `apt-get download left no .deb for ${pkg.name}`);
    const root = join(work, 'root');
    await runProcess('dpkg', ['-x', join(work, deb), root], { timeoutMs: 10 * 60_000 });
    await rm(join(work, deb));

    const kernelVersion = pkg.name.replace(/^linux-image-/, '');
    const modRoot = join(root, 'lib', 'modules', kernelVersion);
    const vmlinuz = join(root, 'boot', `vmlinuz-${kernelVersion}`);
    if (!(await exists(vmlinuz)) || !(await exists(modRoot))) {
      throw new MamoriError(
        'TEST_GUEST_MISSING',
        `${pkg.name} holds no boot/vmlinuz-${kernelVersion} or lib/modules/${kernelVersion}`,
      );
    }
    // The package ships no modules.dep (its postinst runs depmod): make one.
    if (!(await exists(join(modRoot, 'modules.dep')))) {
      await runProcess('depmod', ['-b', root, kernelVersion], { timeoutMs: 5 * 60_000 });
    }
    const builtinText = await readFile(join(modRoot, 'modules.builtin'), 'utf8').catch(() => '');
    const builtin = new Set(builtinText.split('\n').filter(Boolean).map(moduleName));
    const order = moduleLoadOrder(await readFile(join(modRoot, 'modules.dep'), 'utf8'), GUEST_MODULES, builtin);

    const staging = `${finalDir}.tmp-${process.pid}`;
    await rm(staging, { recursive: true, force: true });
    await mkdir(join(staging, 'modules'), { recursive: true });
    await copyFile(vmlinuz, join(staging, 'vmlinuz'));
    const files: string[] = [];
    for (const rel of order) {
      const plain = await plainModule(modRoot, rel);
      const file = basename(plain);
      await copyFile(plain, join(staging, 'modules', file));
      files.push(file);
    }
    const pvh = await extractPvhKernel(join(staging, 'vmlinuz'), join(staging, 'vmlinux'));
    await writeFile(
      join(staging, 'kernel.json'),
      JSON.stringify({ package: pkg, kernelVersion, modules: files, vmlinuxPvh: pvh }, null, 2) + '\n',
    );
    await rm(finalDir, { recursive: true, force: true });
    await rename(staging, finalDir);
    // Older kernels' caches are dead weight once a new one is in place.
    for (const entry of await readdir(cacheDir)) {
      if (join(cacheDir, entry) !== finalDir) await rm(join(cacheDir, entry), { recursive: true, force: true });
    }
    return {
      package: pkg,
      kernelVersion,
      vmlinuz: join(finalDir, 'vmlinuz'),
      vmlinuxPvh: pvh ? join(finalDir, 'vmlinux') : null,
      modules: files.map((f) => join(finalDir, 'modules', f)),
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
