import type { PoolSpec } from '../store/repos/pool-records.js';

/**
 * The customization of a Windows desktop: user-data that cloudbase-init (Windows' cloud-init,
 * which reads the same NoCloud seed and sets the hostname from its meta-data) runs as a
 * PowerShell script once per instance. It reports each step in the same words as the Linux
 * script, `mamori-guest customize ...`, on COM1, the serial port the site logs, and on its
 * own output, which cloudbase-init logs (to COM1 too when it holds the port itself).
 *
 * Licence activation is KMS (View Composer's QuickPrep/Sysprep do the same): the KMS host is
 * checked for a TCP connection first, so "unreachable" is told apart from a refusal, then
 * `slmgr /skms` and `slmgr /ato` run within the pool's timeout. The master is expected to be
 * generalized (sysprep) and to carry a KMS client key (GVLK), as View Composer expects.
 */
export const WINDOWS_CUSTOMIZE_SCRIPT = 'mamori-customize.ps1';

/** Single-quoted for PowerShell: inside '...' only ' needs care, and it is doubled. */
function psQuote(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

export function windowsCustomizationScript(spec: PoolSpec, desktop: string): string {
  const lines = [
    '#ps1_sysnative',
    `# mamori: customization of desktop ${desktop} (generated). Every report is one line.`,
    "$ErrorActionPreference = 'Continue'",
    'function Say([string]$m) {',
    '  $line = "mamori-guest customize $m"',
    "  try { $p = New-Object System.IO.Ports.SerialPort 'COM1', 115200; $p.Open(); $p.WriteLine($line); $p.Close() } catch { }",
    '  Write-Output $line',
    '}',
    "function Clip([string]$s) { $s = ($s -replace '\\s+', ' ').Trim(); if ($s.Length -gt 300) { $s.Substring(0, 300) } else { $s } }",
    `Say ${psQuote(`start ${desktop}`)}`,
  ];
  spec.commands.forEach((cmd, i) => {
    // Through a .cmd file: PowerShell 5's quoting of arguments to native programs mangles quotes.
    lines.push(
      `$f = Join-Path $env:TEMP 'mamori-cmd-${i + 1}.cmd'`,
      `Set-Content -Path $f -Value ${psQuote(cmd)} -Encoding ASCII`,
      '$out = & cmd.exe /c $f 2>&1 | Out-String',
      `if ($LASTEXITCODE -ne 0) { Say ("failed command=${i + 1} output=" + (Clip $out)); exit 0 }`,
    );
  });
  if (spec.kmsHost !== null && !spec.skipLicenseActivation) {
    const [host, port] = splitHostPort(spec.kmsHost);
    const t = spec.licenseTimeoutSec;
    lines.push(
      `$kmsHost = ${psQuote(host)}; $kmsPort = ${port}; $limit = ${t}`,
      '$started = Get-Date',
      '$tcp = New-Object System.Net.Sockets.TcpClient',
      '$reached = $false',
      // A connection refused or unanswered within 10 s is "unreachable", not an activation error.
      'try { $reached = $tcp.ConnectAsync($kmsHost, $kmsPort).Wait(10000) } catch { $reached = $false } finally { $tcp.Close() }',
      '$took = [int]((Get-Date) - $started).TotalSeconds',
      'if (-not $reached) { Say "license-failed cause=kms-unreachable seconds=$took timeout=$limit output=no TCP connection to ${kmsHost}:$kmsPort"; exit 0 }',
      "$slmgr = Join-Path $env:SystemRoot 'System32\\slmgr.vbs'",
      '$null = & cscript.exe //nologo $slmgr /skms "${kmsHost}:$kmsPort" 2>&1',
      "$log = Join-Path $env:TEMP 'mamori-ato.out'",
      "$ato = Start-Process -FilePath cscript.exe -ArgumentList '//nologo', $slmgr, '/ato' -NoNewWindow -PassThru -RedirectStandardOutput $log",
      'if (-not $ato.WaitForExit($limit * 1000)) { $ato.Kill(); $took = [int]((Get-Date) - $started).TotalSeconds; Say "license-failed cause=timeout seconds=$took timeout=$limit output="; exit 0 }',
      '$out = Get-Content -Raw $log',
      '$took = [int]((Get-Date) - $started).TotalSeconds',
      // slmgr prints "Error: 0xC004F074 ..." and may still exit 0.
      'if ($ato.ExitCode -ne 0 -or $out -match \'Error: 0x\') { Say ("license-failed cause=exit-$($ato.ExitCode) seconds=$took timeout=$limit output=" + (Clip $out)); exit 0 }',
      'Say "license-activated seconds=$took"',
    );
  }
  lines.push("Say 'done'");
  return `${lines.join('\r\n')}\r\n`;
}

/** `host`, `host:port` or `[v6]:port`; the KMS port defaults to 1688. */
export function splitHostPort(hostPort: string): [string, number] {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:]+))(?::(\d+))?$/.exec(hostPort);
  if (!m) return [hostPort, 1688];
  return [m[1] ?? m[2]!, m[3] !== undefined ? Number(m[3]) : 1688];
}
