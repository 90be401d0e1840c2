import { gzipSync } from 'node:zlib';

/**
 * A cpio "newc" archive as the kernel's initramfs unpacker reads it, written
 * here rather than with cpio(1) so that device nodes (/dev/console) need no
 * mknod and root, and so the same inputs give the same bytes (uid 0, mtime 0).
 */
export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Buffer; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'chardev'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

function header(ino: number, mode: number, size: number, nameSize: number, rdevMajor = 0, rdevMinor = 0): Buffer {
  const nlink = (mode & 0o170000) === S_IFDIR ? 2 : 1;
  const fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, nameSize, 0];
  return Buffer.from('070701' + fields.map(hex8).join(''), 'ascii');
}

export function buildCpioNewc(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  const push = (b: Buffer): void => {
    parts.push(b);
    offset += b.length;
  };
  const emit = (ino: number, path: string, mode: number, data: Buffer, rdev: [number, number] = [0, 0]): void => {
    const name = Buffer.from(path.replace(/^\/+/, '') + '\0', 'utf8');
    push(header(ino, mode, data.length, name.length, rdev[0], rdev[1]));
    push(name);
    push(pad4(offset));
    push(data);
    push(pad4(offset));
  };
  let ino = 1;
  for (const e of entries) {
    switch (e.type) {
      case 'dir':
        emit(ino++, e.path, S_IFDIR | (e.mode ?? 0o755), Buffer.alloc(0));
        break;
      case 'file':
        emit(ino++, e.path, S_IFREG | (e.mode ?? 0o644), e.data);
        break;
      case 'symlink':
        emit(ino++, e.path, S_IFLNK | 0o777, Buffer.from(e.target, 'utf8'));
        break;
      case 'chardev':
        emit(ino++, e.path, S_IFCHR | (e.mode ?? 0o600), Buffer.alloc(0), [e.major, e.minor]);
        break;
    }
  }
  emit(0, 'TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}

export function buildInitramfs(entries: readonly CpioEntry[]): Buffer {
  return gzipSync(buildCpioNewc(entries), { level: 9 });
}
