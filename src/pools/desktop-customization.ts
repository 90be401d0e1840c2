import type { PoolSpec } from '../store/repos/pool-records.js';
import { splitHostPort } from './windows-customization.js';

/**
 * What makes each linked clone its own machine before first use (View Composer's QuickPrep),
 * delivered on its identity disk, a cloud-init NoCloud seed:
 *   - meta-data: the hostname from the name pattern and an instance-id of its own, so
 *     cloud-init runs its per-instance modules: new SSH host keys (ssh_deletekeys);
 *   - user-data: a fresh machine-id, then the customization script below, once per instance;
 *   - mamori-customize.sh: the same script, which the test guest runs from the seed.
 * The script reports each step on the serial console as `mamori-guest customize ...`; the
 * site reads the desktop's state back from there (customizationState).
 *
 * Windows desktops get the same steps as PowerShell for cloudbase-init (windows-customization.ts).
 *
 * Licence activation is its own step (a registration command for Linux guests, KMS for
 * Windows ones). When it fails the desktop is `customization-failed` with "Failed to
 * activate software license", the cause and the remedy; skipLicenseActivation leaves it out.
 */
export const CUSTOMIZE_SCRIPT = 'mamori-customize.sh';

/** Single-quoted for sh: the only character that needs care inside '...' is ' itself. */
function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function customizationScript(spec: PoolSpec, desktop: string): string {
  const lines = [
    '#!/bin/sh',
    `# mamori: customization of desktop ${desktop} (generated). Every report is one echo.`,
    'say() { echo "mamori-guest customize $*"; }',
    `say start ${desktop}`,
  ];
  spec.commands.forEach((cmd, i) => {
    lines.push(
      `if ! sh -c ${shQuote(cmd)} > /tmp/mamori-cmd.out 2>&1; then`,
      `  say failed command=${i + 1} output=$(head -c 300 /tmp/mamori-cmd.out | tr '\\n' ' ')`,
      '  exit 0',
      'fi',
    );
  });
  if (spec.licenseCommand !== null && !spec.skipLicenseActivation) {
    const t = spec.licenseTimeoutSec;
    lines.push(
      'started=$(date +%s)',
      `timeout ${t} sh -c ${shQuote(spec.licenseCommand)} > /tmp/mamori-license.out 2>&1`,
      'rc=$?',
      'took=$(( $(date +%s) - started ))',
      'if [ "$rc" -ne 0 ]; then',
      `  if [ "$took" -ge ${t} ]; then cause=timeout; else cause=exit-$rc; fi`,
      `  say license-failed cause=$cause seconds=$took timeout=${t} output=$(head -c 300 /tmp/mamori-license.out | tr '\\n' ' ')`,
      '  exit 0',
      'fi',
      'say license-activated seconds=$took',
    );
  }
  lines.push('say done');
  return `${lines.join('\n')}\n`;
}

/** cloud-config for guests with cloud-init: new SSH host keys, a new machine-id, then the script once. */
export function customizationCloudConfig(script: string): string {
  const indented = script
    .split('\n')
    .map((l) => (l ? `      ${l}` : ''))
    .join('\n');
  return [
    'ssh_deletekeys: true',
    'bootcmd:',
    // A clone must not keep its master's machine-id (DHCP client ids, journald, systemd units).
    "  - [cloud-init-per, instance, mamori-machine-id, sh, -c, 'rm -f /etc/machine-id /var/lib/dbus/machine-id; systemd-machine-id-setup || dbus-uuidgen --ensure=/etc/machine-id']",
    'write_files:',
    '  - path: /var/lib/mamori/customize.sh',
    "    permissions: '0700'",
    '    content: |',
    indented,
    'runcmd:',
    "  - [sh, -c, 'sh /var/lib/mamori/customize.sh > /dev/console 2>&1']",
    '',
  ].join('\n');
}

export type DesktopState = 'provisioned' | 'customizing' | 'ready' | 'customization-failed';

/**
 * The desktop's customization state from its serial log (the newest boot: the log starts
 * afresh at each start). `booted`: whether the VM ever ran since it was (re)built.
 */
export function customizationState(
  serial: string,
  booted: boolean,
  spec: Pick<PoolSpec, 'licenseCommand' | 'kmsHost'>,
): { state: DesktopState; message: string | null } {
  const reports = [...serial.matchAll(/mamori-guest customize (\S+)(.*)$/gm)].map((m) => ({
    what: m[1]!,
    rest: m[2]!.trim(),
  }));
  const last = reports.at(-1);
  if (!last) return { state: booted ? 'customizing' : 'provisioned', message: null };
  if (last.what === 'done') return { state: 'ready', message: null };
  if (last.what === 'license-failed') {
    const f = fields(last.rest);
    if (spec.kmsHost) return { state: 'customization-failed', message: kmsFailure(spec.kmsHost, f) };
    const cause =
      f['cause'] === 'timeout'
        ? `the registration command did not finish within ${f['timeout']} s`
        : `the registration command failed (${f['cause'] ?? 'unknown'}) after ${f['seconds']} s${f['output'] ? `: ${f['output']}` : ''}`;
    return {
      state: 'customization-failed',
      message:
        `Failed to activate software license: ${cause} (${spec.licenseCommand ?? 'no command'}). ` +
        'Check that the desktops reach the licensing server, or recreate the pool with --skip-license-activation for a lab without one',
    };
  }
  if (last.what === 'failed') {
    const f = fields(last.rest);
    return {
      state: 'customization-failed',
      message: `customization command ${f['command']} failed${f['output'] ? `: ${f['output']}` : ''}; fix it and refresh the desktop`,
    };
  }
  return { state: 'customizing', message: null };
}

/** View Composer's words for a failed KMS activation, with the cause the desktop reported and the remedy. */
function kmsFailure(kmsHost: string, f: Record<string, string>): string {
  const [, port] = splitHostPort(kmsHost);
  const cause =
    f['cause'] === 'kms-unreachable'
      ? `the KMS host ${kmsHost} is unreachable from the desktop (no TCP connection to port ${port})`
      : f['cause'] === 'timeout'
        ? `activation against the KMS host ${kmsHost} did not finish within ${f['timeout']} s`
        : `slmgr /ato against the KMS host ${kmsHost} failed (${f['cause'] ?? 'unknown'}) after ${f['seconds']} s${f['output'] ? `: ${f['output']}` : ''}`;
  return (
    `Failed to activate software license: ${cause}. Check that the desktops reach the KMS host on TCP ${port} and that the master holds a KMS client key (GVLK), ` +
    'or recreate the pool with --skip-license-activation for a lab without a KMS host'
  );
}

/** `key=value ...` where the last key (output) takes the rest of the line. */
function fields(rest: string): Record<string, string> {
  const out: Record<string, string> = {};
  const m = /(?:^|\s)output=(.*)$/.exec(rest);
  const head = m ? rest.slice(0, m.index) : rest;
  if (m) out['output'] = m[1]!.trim();
  for (const kv of head.trim().split(/\s+/)) {
    const i = kv.indexOf('=');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}
