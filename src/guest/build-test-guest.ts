import { createHash } from 'node:crypto';
import { access, copyFile, link, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isMamoriError, MamoriError } from '../core/mamori-error.js';
import { runProcess } from '../core/run-process.js';
import {
  aptListsFingerprint,
  GUEST_MODULES,
  prepareKernel,
  resolveKernelPackage,
  type KernelPackage,
} from './guest-kernel.js';
import { buildInitramfs, type CpioEntry } from './initramfs-cpio.js';

export interface BuildTestGuestOptions {
  outDir: string;
  /** Rebuild even when outDir holds a build of the same inputs. */
  force?: boolean;
}

export interface TestGuest {
  /** Debian's bzImage (vmlinuz): boots anywhere, including from a UEFI stub. */
  kernel: string;
  initrd: string;
  kernelVersion: string;
  /**
   * The same kernel uncompressed (ELF, PVH entry) for `-kernel`: saves the ~4 s
   * of XZ decompression every TCG boot pays with vmlinuz. Null if not extracted.
   */
  kernelPvh: string | null;
}

/** Bump when the build itself changes in a way the input hashes do not show. */
// 3: qemu-guest-agent and its fsfreeze hook. 4: NoCloud config drive (isofs, awk, ip).
// 5: /bin/diskbench (its source is hashed too: diskbenchSha256).
const BUILDER_VERSION = 5;
const STAMP = 'guest.json';
const LOCK_WAIT_MS = 15 * 60_000;

interface Stamp {
  /** Hash of every input, the kernel package included. */
  inputsHash: string;
  /** Hash of the inputs found on this machine without apt. */
  localHash: string;
  aptLists: string;
  inputs: Record<string, unknown>;
  kernelVersion: string;
  files: Record<string, { size: number; sha256: string }>;
  builtAt: string;
}

/** Finds src/guest/ from here, whether running from src/ or from dist/src/. */
async function guestSourceDir(): Promise<string> {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'src', 'guest');
    if (await exists(join(candidate, 'writelog-writer.c'))) return candidate;
    if (await exists(join(dir, 'writelog-writer.c'))) return dir;
    const parent = dirname(dir);
    if (parent === dir)
      throw new MamoriError(
        'TEST_GUEST_MISSING',
        'cannot find src/guest/writelog-writer.c above the build script: run it from a mamori checkout',
      );
    dir = parent;
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** True for an ELF executable without PT_INTERP: it runs with no libc in the initramfs. */
export function isStaticElf(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return false;
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  const phnum = elf.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > elf.length) return false;
    if (elf.readUInt32LE(off) === 3) return false; // PT_INTERP
  }
  return true;
}

/** Downloads a Debian package (not installed) and unpacks it under work; returns its root. */
async function unpackDebianPackage(work: string, name: string): Promise<string> {
  await runProcess('apt-get', ['-o', 'APT::Sandbox::User=root', '-q', 'download', name], {
    cwd: work,
    timeoutMs: 10 * 60_000,
  });
  const { stdout } = await runProcess('find', [work, '-maxdepth', '1', '-name', `${name}_*.deb`]);
  const deb = stdout.trim().split('\n')[0];
  if (!deb) throw new Error(`apt-get download ${name} gave no .deb`);
  const root = join(work, `${name}-root`);
  await runProcess('dpkg', ['-x', deb, root]);
  return root;
}

/** The host's busybox-static, or the package's binary when the host has none. */
async function staticBusybox(work: string): Promise<Buffer> {
  const host = await readFile('/bin/busybox').catch(() => null);
  if (host && isStaticElf(host)) return host;
  try {
    const bin = await readFile(join(await unpackDebianPackage(work, 'busybox-static'), 'bin', 'busybox'));
    if (isStaticElf(bin)) return bin;
    throw new Error('the packaged busybox is not static');
  } catch (err) {
    throw new MamoriError(
      'TEST_GUEST_MISSING',
      `no static busybox for the guest: ${(err as Error).message}. Install it with: apt-get install busybox-static`,
      { cause: err },
    );
  }
}

/**
 * qemu-ga from Debian's qemu-guest-agent package, and the shared libraries it loads, taken
 * from the host (QEMU's own packages put the same glib, udev and numa libraries there).
 * The initramfs keeps their host paths, so the binary's interpreter and rpath just work.
 */
async function guestAgentFiles(work: string): Promise<{ path: string; data: Buffer }[]> {
  try {
    const bin = join(await unpackDebianPackage(work, 'qemu-guest-agent'), 'usr', 'sbin', 'qemu-ga');
    const ldd = await runProcess('ldd', [bin], { timeoutMs: 30_000 });
    const missing = ldd.stdout.split('\n').filter((l) => l.includes('not found'));
    if (missing.length > 0)
      throw new Error(`libraries missing on this host: ${missing.map((l) => l.trim()).join(', ')}`);
    const libs = [...ldd.stdout.matchAll(/(?:=>\s+|^\s*)(\/\S+)\s+\(0x/gm)].map((m) => m[1]!);
    const files = [{ path: 'usr/sbin/qemu-ga', data: await readFile(bin) }];
    for (const lib of new Set(libs)) files.push({ path: lib.replace(/^\/+/, ''), data: await readFile(lib) });
    return files;
  } catch (err) {
    throw new MamoriError(
      'TEST_GUEST_MISSING',
      `no qemu-guest-agent for the guest: ${(err as Error).message}. It comes from Debian's qemu-guest-agent package (apt-get download must work)`,
      { cause: err },
    );
  }
}

// Run by qemu-ga with "freeze" before it freezes filesystems and "thaw" after (as a
// database's hook in fsfreeze-hook.d would). The write-log writer is this guest's
// application: it is stopped between system calls, so no record is half written, and
// continued at thaw. Each line is one write to the console.
const FSFREEZE_HOOK = `#!/bin/sh
WL=
[ -r /run/mamori-wl.pid ] && read -r WL < /run/mamori-wl.pid
case "$1" in
  freeze) [ -n "$WL" ] && kill -STOP "$WL"; echo "mamori-fsfreeze freeze" > /dev/console ;;
  thaw) [ -n "$WL" ] && kill -CONT "$WL"; echo "mamori-fsfreeze thaw" > /dev/console ;;
esac
exit 0
`;

const BASE_DIRS = [
  'bin',
  'sbin',
  'usr',
  'usr/bin',
  'usr/sbin',
  'dev',
  'proc',
  'sys',
  'run',
  'tmp',
  'etc',
  'etc/acpi',
  'etc/acpi/PWRF',
  'etc/qemu',
  'lib',
  'lib/modules',
];

/** 'a/b/c' -> ['a', 'a/b'], parents first. */
function parentDirs(path: string): string[] {
  const parts = path.split('/').slice(0, -1);
  return parts.map((_, i) => parts.slice(0, i + 1).join('/'));
}

/** Compiles one of the guest's static C programs (what: its name in an error). */
async function compileStatic(source: string, out: string, what: string): Promise<void> {
  try {
    await runProcess('gcc', ['-static', '-O2', '-s', '-Wall', '-Wextra', '-o', out, source], { timeoutMs: 5 * 60_000 });
  } catch (err) {
    throw new MamoriError(
      'TEST_GUEST_MISSING',
      `compiling ${what} failed: ${(err as Error).message}. It needs gcc and libc6-dev (apt-get install gcc libc6-dev).`,
      {
        cause: err,
      },
    );
  }
}

// Run by busybox acpid on a power-button press (QMP system_powerdown). It stops
// the writer at once, between records; /init sees the flag, waits for the
// writer, syncs, prints its poweroff line and powers off.
const POWER_BUTTON_HANDLER = `#!/bin/sh
touch /run/mamori-poweroff
[ -r /run/mamori-wl.pid ] && kill -TERM "$(cat /run/mamori-wl.pid)" 2>/dev/null
exit 0
`;

async function readStamp(outDir: string): Promise<Stamp | null> {
  try {
    const stamp = JSON.parse(await readFile(join(outDir, STAMP), 'utf8')) as Stamp;
    for (const [file, want] of Object.entries(stamp.files)) {
      if ((await stat(join(outDir, file))).size !== want.size) return null;
    }
    return stamp;
  } catch {
    return null;
  }
}

async function writeStamp(outDir: string, stamp: Stamp): Promise<void> {
  await writeFile(join(outDir, `${STAMP}.tmp`), JSON.stringify(stamp, null, 2) + '\n');
  await rename(join(outDir, `${STAMP}.tmp`), join(outDir, STAMP));
}

function result(outDir: string, stamp: Stamp): TestGuest {
  return {
    kernel: join(outDir, 'vmlinuz'),
    initrd: join(outDir, 'initrd.img'),
    kernelVersion: stamp.kernelVersion,
    kernelPvh: 'vmlinux-pvh' in stamp.files ? join(outDir, 'vmlinux-pvh') : null,
  };
}

/**
 * One build at a time per outDir, across processes (test files run in
 * parallel). A lock left by a dead process is taken over.
 */
async function withLock<T>(outDir: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(outDir, '.build.lock');
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await mkdir(lock);
      await writeFile(join(lock, 'pid'), String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number(await readFile(join(lock, 'pid'), 'utf8').catch(() => 'NaN'));
      let alive = true;
      if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 0);
        } catch {
          alive = false;
        }
      }
      if (!alive) {
        await rm(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) {
        throw new MamoriError(
          'TEST_GUEST_MISSING',
          `another build holds ${lock} for too long; remove it if no build is running`,
          { details: { lock } },
        );
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

/**
 * Builds the test guest (Debian 12 kernel + busybox initramfs with the
 * write-log writer and the disk benchmark) into outDir: vmlinuz, initrd.img
 * and guest.json. Does nothing when guest.json already records a build of the
 * same inputs.
 */
export async function buildTestGuest(options: BuildTestGuestOptions): Promise<TestGuest> {
  const outDir = resolve(options.outDir);
  await mkdir(outDir, { recursive: true });
  const src = await guestSourceDir();
  const [writerSource, diskbenchSource, initScript] = await Promise.all([
    readFile(join(src, 'writelog-writer.c')),
    readFile(join(src, 'diskbench.c')),
    readFile(join(src, 'guest-init.sh')),
  ]);
  const work = await mkdtemp(join(tmpdir(), 'mamori-guest-'));
  try {
    const busybox = await staticBusybox(work);
    const local = {
      builder: BUILDER_VERSION,
      modules: GUEST_MODULES,
      busyboxSha256: sha256(busybox),
      writerSha256: sha256(writerSource),
      diskbenchSha256: sha256(diskbenchSource),
      initSha256: sha256(initScript),
      powerButtonSha256: sha256(POWER_BUTTON_HANDLER),
      fsfreezeHookSha256: sha256(FSFREEZE_HOOK),
    };
    const localHash = sha256(JSON.stringify(local));
    const aptLists = await aptListsFingerprint();
    // Fast path: same local inputs and apt's lists untouched since the build,
    // so the kernel package cannot have changed; asking apt-cache costs seconds.
    const quick = options.force ? null : await readStamp(outDir);
    if (quick && quick.localHash === localHash && quick.aptLists === aptLists) return result(outDir, quick);

    const pkg: KernelPackage = await resolveKernelPackage();
    const inputs = { ...local, kernelPackage: pkg };
    const inputsHash = sha256(JSON.stringify(inputs));
    const current = async (): Promise<Stamp | null> => {
      const s = options.force ? null : await readStamp(outDir);
      return s?.inputsHash === inputsHash ? s : null;
    };

    return await withLock(outDir, async () => {
      const built = await current(); // another process may have built it while we waited
      if (built) {
        if (built.aptLists !== aptLists) await writeStamp(outDir, { ...built, aptLists });
        return result(outDir, built);
      }
      const kernel = await prepareKernel(pkg, join(outDir, 'kernel-cache'));
      const writer = join(work, 'mamori-wl');
      const diskbench = join(work, 'diskbench');
      await compileStatic(join(src, 'writelog-writer.c'), writer, 'the write-log writer');
      await compileStatic(join(src, 'diskbench.c'), diskbench, 'the disk benchmark');
      const agent = await guestAgentFiles(work);
      const agentDirs = [...new Set(agent.flatMap((f) => parentDirs(f.path)))].filter((d) => !BASE_DIRS.includes(d));

      const entries: CpioEntry[] = [
        ...[...BASE_DIRS, ...agentDirs].map((path): CpioEntry => ({ type: 'dir', path })),
        // The kernel opens /dev/console for /init before devtmpfs is mounted.
        { type: 'chardev', path: 'dev/console', major: 5, minor: 1 },
        { type: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
        { type: 'symlink', path: 'bin/sh', target: 'busybox' },
        { type: 'file', path: 'bin/mamori-wl', data: await readFile(writer), mode: 0o755 },
        { type: 'file', path: 'bin/diskbench', data: await readFile(diskbench), mode: 0o755 },
        { type: 'file', path: 'init', data: initScript, mode: 0o755 },
        { type: 'file', path: 'etc/acpi/PWRF/00000080', data: Buffer.from(POWER_BUTTON_HANDLER), mode: 0o755 },
        { type: 'file', path: 'etc/qemu/fsfreeze-hook', data: Buffer.from(FSFREEZE_HOOK), mode: 0o755 },
        ...agent.map((f): CpioEntry => ({ type: 'file', path: f.path, data: f.data, mode: 0o755 })),
        {
          type: 'file',
          path: 'lib/modules/load-order',
          data: Buffer.from(kernel.modules.map((m) => basename(m) + '\n').join('')),
        },
      ];
      for (const m of kernel.modules)
        entries.push({ type: 'file', path: `lib/modules/${basename(m)}`, data: await readFile(m) });
      const initrd = buildInitramfs(entries);
      const vmlinuz = await readFile(kernel.vmlinuz);

      // Each file lands by rename, so a QEMU already booting the old build keeps
      // its open files; the stamp comes last and marks the build complete.
      await rm(join(outDir, STAMP), { force: true });
      const files: Stamp['files'] = {};
      const place = async (name: string, data: Buffer): Promise<void> => {
        await writeFile(join(outDir, `${name}.tmp`), data);
        await rename(join(outDir, `${name}.tmp`), join(outDir, name));
        files[name] = { size: data.length, sha256: sha256(data) };
      };
      await place('vmlinuz', vmlinuz);
      await place('initrd.img', initrd);
      if (kernel.vmlinuxPvh) {
        // 66 MB: a hard link to the kernel cache's copy instead of a second one.
        const tmp = join(outDir, 'vmlinux-pvh.tmp');
        await rm(tmp, { force: true });
        await link(kernel.vmlinuxPvh, tmp).catch(() => copyFile(kernel.vmlinuxPvh as string, tmp));
        await rename(tmp, join(outDir, 'vmlinux-pvh'));
        const elf = await readFile(join(outDir, 'vmlinux-pvh'));
        files['vmlinux-pvh'] = { size: elf.length, sha256: sha256(elf) };
      } else {
        await rm(join(outDir, 'vmlinux-pvh'), { force: true });
      }
      const stamp: Stamp = {
        inputsHash,
        localHash,
        aptLists,
        inputs,
        kernelVersion: kernel.kernelVersion,
        files,
        builtAt: new Date().toISOString(),
      };
      await writeStamp(outDir, stamp);
      return result(outDir, stamp);
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function main(argv: string[]): Promise<void> {
  const args = argv.filter((a) => a !== '--force');
  const outDir = args[0];
  if (!outDir || args.length > 1) {
    process.stderr.write('usage: node dist/src/guest/build-test-guest.js [--force] OUTDIR\n');
    process.exitCode = 2;
    return;
  }
  const started = Date.now();
  try {
    const guest = await buildTestGuest({ outDir, force: argv.includes('--force') });
    process.stdout.write(JSON.stringify({ ...guest, seconds: (Date.now() - started) / 1000 }, null, 2) + '\n');
  } catch (err) {
    process.stderr.write(`build-test-guest: ${isMamoriError(err) ? `${err.code}: ${err.message}` : String(err)}\n`);
    process.exitCode = 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  await main(process.argv.slice(2));
}
