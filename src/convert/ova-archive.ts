import { open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { MamoriError } from '../core/mamori-error.js';

/** A regular file in a tar archive; `offset` is where its data starts in the archive. */
export interface TarMember {
  name: string;
  offset: number;
  size: number;
}

const BLOCK = 512;
/** Pax and GNU long-name records are names and numbers: anything this large is damage, not a name. */
const MAX_META = 1024 * 1024;
const COPY_CHUNK = 4 * 1024 * 1024;
/** The largest size 11 octal digits hold; larger sizes take GNU's base-256 form. */
const OCTAL_SIZE_LIMIT = 8 ** 11;

const corrupt = (message: string, details?: Record<string, unknown>): MamoriError =>
  new MamoriError('IMAGE_CORRUPT', message, details === undefined ? {} : { details });

async function readAt(fh: FileHandle, length: number, position: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}

/** A NUL-terminated (or field-filling) string. */
const field = (h: Buffer, start: number, length: number): string => {
  const f = h.subarray(start, start + length);
  const end = f.indexOf(0);
  return f.subarray(0, end === -1 ? length : end).toString('utf8');
};

/** Octal, padded with NULs or spaces; or GNU base-256 when the first byte's high bit is set. */
function number(h: Buffer, start: number, length: number): number | undefined {
  const f = h.subarray(start, start + length);
  if ((f[0]! & 0x80) !== 0) {
    if (f[0] === 0xff) return undefined; // negative
    let v = f[0]! & 0x7f;
    for (const b of f.subarray(1)) v = v * 256 + b;
    return Number.isSafeInteger(v) ? v : undefined;
  }
  const s = f
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .replace(/^ +/, '');
  if (s === '') return 0;
  return /^[0-7]+$/.test(s) ? parseInt(s, 8) : undefined;
}

/** The header's byte sum with its checksum field counted as spaces (unsigned, as POSIX says, or signed, as old tars wrote). */
function checksumOk(h: Buffer): boolean {
  const stored = number(h, 148, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += b;
    signed += b >= 0x80 ? b - 0x100 : b;
  }
  return stored === unsigned || stored === signed;
}

/** `key=value` records, each "LEN key=value\n" with LEN counting the whole record. */
function paxRecords(data: Buffer): Map<string, string> | undefined {
  const out = new Map<string, string>();
  let at = 0;
  while (at < data.length && data[at] !== 0) {
    const space = data.indexOf(0x20, at);
    const len = space === -1 ? NaN : Number(data.subarray(at, space).toString('latin1'));
    if (!Number.isInteger(len) || len <= space - at || at + len > data.length) return undefined;
    const record = data.subarray(space + 1, at + len - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq === -1) return undefined;
    out.set(record.slice(0, eq), record.slice(eq + 1));
    at += len;
  }
  return out;
}

/**
 * The regular files of a tar archive (ustar, GNU or pax), read from headers only: disks stay
 * where they are, for QEMU to read in place at `offset`.
 */
export async function listTarMembers(path: string): Promise<TarMember[]> {
  const fh = await open(path, 'r').catch((cause: unknown) => {
    throw new MamoriError('INVALID_INPUT', `cannot open ${path}: ${(cause as Error).message}`, { cause });
  });
  try {
    const fileSize = (await fh.stat()).size;
    const members: TarMember[] = [];
    let longName: string | undefined;
    let pax = new Map<string, string>();
    for (let pos = 0; ;) {
      const damaged = (): MamoriError =>
        pos === 0
          ? corrupt(`${path} is not a tar archive (an OVA is one); check it was copied whole, or export the VM again`)
          : corrupt(`${path} is truncated or damaged at offset ${pos}; copy it again or export the VM again`, {
              offset: pos,
            });
      const h = await readAt(fh, BLOCK, pos);
      // A file ending right after a member lacks the end-of-archive blocks, which readers forgive.
      if (h.length === 0 && pos > 0) break;
      if (h.length < BLOCK) throw damaged();
      if (h.every((b) => b === 0)) break;
      if (!checksumOk(h)) throw damaged();
      const headerSize = number(h, 124, 12);
      if (headerSize === undefined) throw damaged();
      const paxSize = pax.get('size');
      const size = paxSize !== undefined && /^\d+$/.test(paxSize) ? Number(paxSize) : headerSize;
      const offset = pos + BLOCK;
      if (offset + size > fileSize)
        throw corrupt(
          `${path} is truncated: a member at offset ${pos} needs ${size} bytes but the file ends first; copy it again`,
          { offset: pos },
        );
      const type = String.fromCharCode(h[156]!);
      const meta = async (): Promise<Buffer> => {
        if (size > MAX_META) throw damaged();
        return readAt(fh, size, offset);
      };
      if (type === 'L') {
        longName = field(await meta(), 0, size);
      } else if (type === 'x') {
        const records = paxRecords(await meta());
        if (records === undefined) throw damaged();
        pax = records;
      } else {
        // ustar splits long names into prefix/name; GNU's own format uses the prefix bytes for other things.
        const ustar = h.subarray(257, 263).toString('latin1') === 'ustar\0';
        const prefix = ustar ? field(h, 345, 155) : '';
        const name =
          pax.get('path') ?? longName ?? (prefix === '' ? field(h, 0, 100) : `${prefix}/${field(h, 0, 100)}`);
        if ((type === '0' || type === '\0' || type === '7') && !name.endsWith('/')) {
          members.push({ name: name.replace(/^(\.\/)+/, ''), offset, size });
        }
        // Extended names and sizes apply to the next real header only; a global pax header ('g') and a
        // GNU long link target ('K', which precedes or follows 'L') are not that header.
        if (type !== 'g' && type !== 'K') {
          longName = undefined;
          pax = new Map();
        }
      }
      pos = offset + Math.ceil(size / BLOCK) * BLOCK;
    }
    return members;
  } finally {
    await fh.close();
  }
}

function header(name: string, size: number, mtime: number): Buffer {
  const h = Buffer.alloc(BLOCK);
  const octal = (start: number, length: number, v: number): void => {
    h.write(`${v.toString(8).padStart(length - 1, '0')}\0`, start, 'latin1');
  };
  h.write(name, 0, 'utf8');
  octal(100, 8, 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  if (size < OCTAL_SIZE_LIMIT) {
    octal(124, 12, size);
  } else {
    h[124] = 0x80;
    for (let i = 135, v = size; i > 124; i--, v = Math.floor(v / 256)) h[i] = v % 256;
  }
  octal(136, 12, mtime);
  h.write('0', 156, 'latin1');
  h.write('ustar\u000000', 257, 'latin1');
  h.write('root', 265, 'latin1');
  h.write('root', 297, 'latin1');
  octal(329, 8, 0);
  octal(337, 8, 0);
  h.fill(0x20, 148, 156);
  const sum = h.reduce((n, b) => n + b, 0);
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return h;
}

/**
 * Writes a ustar archive of `members` in the order given (an OVA's .ovf must come first),
 * copying each source in chunks so that disks of any size pass through a small buffer.
 * The file is fsynced before this returns; on failure the partial file is removed.
 */
export async function writeTar(path: string, members: { name: string; source: string }[]): Promise<void> {
  const seen = new Set<string>();
  const sized: { name: string; source: string; size: number }[] = [];
  for (const m of members) {
    const bytes = Buffer.byteLength(m.name, 'utf8');
    if (bytes === 0 || bytes > 100 || m.name.includes('\0'))
      throw new MamoriError(
        'INVALID_INPUT',
        `member name ${JSON.stringify(m.name)} must be 1 to 100 bytes (ustar's limit); use a shorter name`,
      );
    if (seen.has(m.name))
      throw new MamoriError('INVALID_INPUT', `two members are named ${m.name}; give each its own name`);
    seen.add(m.name);
    const st = await stat(m.source).catch((cause: unknown) => {
      throw new MamoriError('INVALID_INPUT', `cannot read ${m.source} for ${m.name}: ${(cause as Error).message}`, {
        cause,
      });
    });
    if (!st.isFile())
      throw new MamoriError('INVALID_INPUT', `${m.source} is not a regular file; give a file to archive as ${m.name}`);
    sized.push({ ...m, size: st.size });
  }
  const out = await open(path, 'w');
  let ok = false;
  try {
    const mtime = Math.floor(Date.now() / 1000);
    const buf = Buffer.alloc(COPY_CHUNK);
    let pos = 0;
    const put = async (data: Buffer): Promise<void> => {
      for (let done = 0; done < data.length;)
        done += (await out.write(data, done, data.length - done, pos + done)).bytesWritten;
      pos += data.length;
    };
    for (const m of sized) {
      await put(header(m.name, m.size, mtime));
      const src = await open(m.source, 'r');
      try {
        let copied = 0;
        while (copied < m.size) {
          const { bytesRead } = await src.read(buf, 0, Math.min(COPY_CHUNK, m.size - copied), copied);
          if (bytesRead === 0) break;
          await put(buf.subarray(0, bytesRead));
          copied += bytesRead;
        }
        // The header already states the size: a source that changed while copied would make a damaged archive.
        if (copied !== m.size || (await src.stat()).size !== m.size) {
          throw new MamoriError(
            'INVALID_INPUT',
            `${m.source} changed size while it was archived; make sure nothing writes to it, then try again`,
          );
        }
      } finally {
        await src.close();
      }
      await put(Buffer.alloc((BLOCK - (m.size % BLOCK)) % BLOCK));
    }
    await put(Buffer.alloc(2 * BLOCK));
    await out.sync();
    ok = true;
  } finally {
    await out.close();
    if (!ok) await unlink(path).catch(() => undefined);
  }
}
