import { constants as fsConstants } from 'node:fs';
import { access } from 'node:fs/promises';
import { MamoriError } from '../core/mamori-error.js';
import { runProcess } from '../core/run-process.js';

export interface MachineType {
  name: string;
  /** The short name that points at this type (e.g. `q35` on `pc-q35-7.2`). */
  alias?: string;
  isDefault: boolean;
  deprecated?: boolean;
}

export interface OvmfFirmware {
  code: string;
  vars: string;
}

export interface QemuHostInfo {
  /** major.minor.micro, e.g. `7.2.22`. */
  qemuVersion: string;
  qemuBinary: string;
  machineTypes: MachineType[];
  ovmf: OvmfFirmware | null;
}

export interface QemuHostInfoOptions {
  qemuBinary?: string;
  /** Where to look for OVMF_CODE_4M.fd / OVMF_VARS_4M.fd (default /usr/share/OVMF). */
  ovmfDir?: string;
  timeoutMs?: number;
}

/** Reads what this host's QEMU offers: its version, machine types, and OVMF firmware. */
export async function readQemuHostInfo(options: QemuHostInfoOptions = {}): Promise<QemuHostInfo> {
  const qemuBinary = options.qemuBinary ?? 'qemu-system-x86_64';
  const timeoutMs = options.timeoutMs ?? 15_000;
  const [version, machines, ovmf] = await Promise.all([
    runProcess(qemuBinary, ['--version'], { timeoutMs }),
    runProcess(qemuBinary, ['-machine', 'help'], { timeoutMs }),
    findOvmf(options.ovmfDir ?? '/usr/share/OVMF'),
  ]);
  return {
    qemuVersion: parseQemuVersion(version.stdout),
    qemuBinary,
    machineTypes: parseMachineHelp(machines.stdout),
    ovmf,
  };
}

/** `QEMU emulator version 7.2.22 (Debian ...)` -> `7.2.22`. */
export function parseQemuVersion(text: string): string {
  const match = /QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  if (match === null) {
    throw new MamoriError(
      'PROCESS_FAILED',
      `could not read a version from QEMU's --version output: ${text.trim().slice(0, 200)}`,
      { details: { output: text } },
    );
  }
  return `${match[1]}.${match[2]}.${match[3] ?? '0'}`;
}

/**
 * Parses `qemu-system-x86_64 -machine help`:
 *   pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)
 *   pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)
 *   pc-i440fx-1.7        Standard PC (i440FX + PIIX, 1996) (deprecated)
 * An alias line is folded into the type it points at, as QMP query-machines reports it.
 */
export function parseMachineHelp(text: string): MachineType[] {
  const types: MachineType[] = [];
  const aliases = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const match = /^(\S+)\s+(.*)$/.exec(raw.trimEnd());
    if (match === null || raw.startsWith('Supported machines')) continue;
    const name = match[1] ?? '';
    const rest = match[2] ?? '';
    const aliasOf = /\(alias of (\S+)\)/.exec(rest)?.[1];
    if (aliasOf !== undefined) {
      aliases.set(aliasOf, name);
      continue;
    }
    const type: MachineType = { name, isDefault: /\(default\)/.test(rest) };
    if (/\(deprecated\)/.test(rest)) type.deprecated = true;
    types.push(type);
  }
  for (const type of types) {
    const alias = aliases.get(type.name);
    if (alias !== undefined) type.alias = alias;
  }
  if (types.length === 0) {
    throw new MamoriError('PROCESS_FAILED', 'QEMU listed no machine types in `-machine help`', {
      details: { output: text.slice(0, 500) },
    });
  }
  return types;
}

/**
 * Pins a requested machine type: an alias (`q35`, `pc`) becomes the concrete versioned
 * type it points at now (`pc-q35-7.2`), so a VM keeps its hardware across QEMU upgrades.
 * A concrete type is returned as is; an unknown one is INVALID_INPUT.
 */
export function resolveMachineType(requested: string, machineTypes: readonly MachineType[]): string {
  const byAlias = machineTypes.find((t) => t.alias === requested);
  if (byAlias !== undefined) return byAlias.name;
  const exact = machineTypes.find((t) => t.name === requested);
  if (exact !== undefined) return exact.name;
  const valid = machineTypes.flatMap((t) => (t.alias === undefined ? [t.name] : [t.alias, t.name]));
  throw new MamoriError('INVALID_INPUT', `unknown machine type "${requested}"; this QEMU offers: ${valid.join(', ')}`, {
    details: { requested, valid },
  });
}

async function findOvmf(dir: string): Promise<OvmfFirmware | null> {
  const code = `${dir}/OVMF_CODE_4M.fd`;
  const vars = `${dir}/OVMF_VARS_4M.fd`;
  try {
    await access(code, fsConstants.R_OK);
    await access(vars, fsConstants.R_OK);
    return { code, vars };
  } catch {
    return null;
  }
}
