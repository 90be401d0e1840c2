import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from '../../src/core/run-process.js';
import type { NetNs } from './netns.js';

/*
 * An OpenSSH server of the test's own (Debian's openssh-server), for code that reaches
 * another host through ssh: its own config, host key, authorized_keys and pid file in a
 * temp folder, listening on an address inside a network namespace the test made. The
 * system's sshd, /etc/ssh and ~/.ssh are never read or written: the server takes only its
 * -f config, and the client argv below runs ssh with -F /dev/null (no config, no ~/.ssh
 * created), its own key and its own known_hosts holding this server's key.
 *
 * sshd run as root needs its privilege-separation folder /run/sshd (compiled in); the
 * package's service makes it at start. It is made here when missing and left (it is the
 * package's, empty, and a system sshd started later expects it).
 */
const SSHD = '/usr/sbin/sshd';
const START_TIMEOUT_MS = 20_000;

async function keygen(file: string, comment: string): Promise<string> {
  await runProcess('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], { timeoutMs: 30_000 });
  return (await readFile(`${file}.pub`, 'utf8')).trim();
}

export class TestSshd {
  readonly dir: string;
  readonly address: string;
  readonly port: number;
  readonly #child: ChildProcess;
  readonly #exited: Promise<void>;
  #log = '';

  private constructor(dir: string, address: string, port: number, child: ChildProcess) {
    this.dir = dir;
    this.address = address;
    this.port = port;
    this.#child = child;
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.#log += c));
  }

  /** Keys and config in a new temp folder, then sshd inside `netns` on address:port; resolves once it listens. */
  static async start(opts: { netns: NetNs; address: string; port: number }): Promise<TestSshd> {
    if (!existsSync(SSHD)) throw new Error(`${SSHD} is missing: install Debian's openssh-server (make deps)`);
    const dir = await mkdtemp(join(tmpdir(), 'mamori-sshd-'));
    try {
      const hostKey = await keygen(join(dir, 'host_ed25519'), 'mamori-test-host');
      await writeFile(
        join(dir, 'authorized_keys'),
        `${await keygen(join(dir, 'client_ed25519'), 'mamori-test-client')}\n`,
        { mode: 0o600 },
      );
      await keygen(join(dir, 'stranger_ed25519'), 'mamori-test-stranger');
      await writeFile(
        join(dir, 'known_hosts'),
        `[${opts.address}]:${opts.port} ${hostKey.split(' ').slice(0, 2).join(' ')}\n`,
      );
      await writeFile(
        join(dir, 'sshd_config'),
        [
          `ListenAddress ${opts.address}:${opts.port}`,
          `HostKey ${join(dir, 'host_ed25519')}`,
          `PidFile ${join(dir, 'sshd.pid')}`,
          `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
          'AuthenticationMethods publickey',
          'PasswordAuthentication no',
          'KbdInteractiveAuthentication no',
          'PermitRootLogin prohibit-password',
          'AllowUsers root',
          // No PAM: no session modules of the system run for the test's logins.
          'UsePAM no',
          // The temp folder is under /tmp (world-writable), which StrictModes would refuse.
          'StrictModes no',
          'PermitUserRC no',
          'UseDNS no',
          'PrintMotd no',
          'PrintLastLog no',
          'PermitTTY no',
          'X11Forwarding no',
          'AllowTcpForwarding no',
          'AllowAgentForwarding no',
          // The adapter opens one connection per zfs command, several at once during a stream.
          'MaxStartups 100',
          'LogLevel VERBOSE',
          '',
        ].join('\n'),
      );
      if (!existsSync('/run/sshd')) await mkdir('/run/sshd', { mode: 0o755 });
      const [file, args] = opts.netns.wrap(SSHD, ['-D', '-e', '-f', join(dir, 'sshd_config')]);
      const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
      const sshd = new TestSshd(dir, opts.address, opts.port, child);
      await sshd.#waitListening();
      return sshd;
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  async #waitListening(): Promise<void> {
    let exited = false;
    void this.#exited.then(() => (exited = true));
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!/Server listening on/.test(this.#log)) {
      if (exited || Date.now() > deadline) {
        await this.stop();
        throw new Error(`sshd did not start listening on ${this.address}:${this.port}: ${this.#log.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Everything sshd logged so far (stderr, -e): "Accepted publickey for root ..." per login. */
  get log(): string {
    return this.#log;
  }

  /** Logins accepted so far (as far as sshd's log has been read: see waitLogins). */
  get logins(): number {
    return this.#log.match(/Accepted publickey for root /g)?.length ?? 0;
  }

  /** The login count once it reaches `n`: the log comes through a pipe, a moment after the login. */
  async waitLogins(n: number, timeoutMs = 10_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.logins < n) {
      if (Date.now() > deadline)
        throw new Error(`sshd logged ${this.logins} logins, not ${n}: ${this.#log.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.logins;
  }

  /**
   * The argv prefix that runs a command as root on this server, as a peerCommand: the
   * authorized key, or `stranger`, a key the server does not accept.
   */
  clientCommand(key: 'client' | 'stranger' = 'client'): string[] {
    return [
      'ssh',
      '-F',
      '/dev/null',
      '-i',
      join(this.dir, `${key}_ed25519`),
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'IdentityAgent=none',
      '-o',
      'BatchMode=yes',
      '-o',
      `UserKnownHostsFile=${join(this.dir, 'known_hosts')}`,
      '-o',
      'GlobalKnownHostsFile=/dev/null',
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      'ConnectTimeout=10',
      '-o',
      'LogLevel=ERROR',
      '-p',
      String(this.port),
      `root@${this.address}`,
    ];
  }

  /** Stops sshd by its pid (SIGTERM, then SIGKILL) and waits for it to exit. Safe to call twice. */
  async stop(): Promise<void> {
    const pid = this.#child.pid;
    if (pid === undefined || this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    this.#child.kill('SIGTERM');
    const killer = setTimeout(() => this.#child.kill('SIGKILL'), 10_000);
    await this.#exited;
    clearTimeout(killer);
  }

  /** stop(), then the temp folder with its keys goes. */
  async destroy(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}
