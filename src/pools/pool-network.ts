import { MamoriError } from '../core/mamori-error.js';
import type { PoolNetwork } from '../store/repos/pool-records.js';

/**
 * How a pool's desktops get their address, on their first NIC:
 *   - dhcp: the guest asks a DHCP server (the network's, or QEMU's user-mode one);
 *   - static: each desktop holds one address of a range of the pool's spec, reserved for it
 *     (pool-addresses.ts) and written into its identity seed with the prefix, gateway and DNS.
 * IPv4 only. The operator gives `RANGE` as FIRST-LAST/PREFIX, e.g. 10.0.5.10-10.0.5.200/24.
 */
export type PoolNetworkInput = { mode: 'dhcp' } | { mode: 'static'; range: string; gateway?: string; dns?: string[] };

const OCTET = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const IPV4 = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

/** An IPv4 address in dotted form as a number, or null (leading zeros refused: 010 reads as octal elsewhere). */
export function ipv4ToNumber(s: unknown): number | null {
  if (typeof s !== 'string') return null;
  const m = IPV4.exec(s);
  if (!m) return null;
  return ((Number(m[1]) << 24) >>> 0) + (Number(m[2]) << 16) + (Number(m[3]) << 8) + Number(m[4]);
}

export function numberToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Addresses the range holds. */
export function rangeSize(net: Extract<PoolNetwork, { mode: 'static' }>): number {
  return ipv4ToNumber(net.last)! - ipv4ToNumber(net.first)! + 1;
}

/** The i-th address of the range (0 = first), with the prefix: what the guest sets, e.g. 10.0.5.10/24. */
export function addressAt(net: Extract<PoolNetwork, { mode: 'static' }>, i: number): string {
  return numberToIpv4(ipv4ToNumber(net.first)! + i);
}

const bad = (what: string): MamoriError => new MamoriError('INVALID_INPUT', `network: ${what}`);

/**
 * The pool's network as stored, from the operator's input, checked: the range inside its
 * prefix (neither the network's own address nor its broadcast), the gateway inside the
 * prefix and outside the range, DNS servers as addresses, and room for `size` desktops.
 */
export function poolNetworkOf(input: unknown, size: number): PoolNetwork {
  if (typeof input !== 'object' || input === null)
    throw bad('give { mode: dhcp } or { mode: static, range: FIRST-LAST/PREFIX }');
  const i = input as Record<string, unknown>;
  if (i['mode'] === 'dhcp') {
    if (i['range'] !== undefined || i['gateway'] !== undefined || i['dns'] !== undefined)
      throw bad('DHCP takes no range, gateway or DNS: the DHCP server gives them');
    return { mode: 'dhcp' };
  }
  if (i['mode'] !== 'static') throw bad(`mode must be dhcp or static, not ${JSON.stringify(i['mode'])}`);
  const m = typeof i['range'] === 'string' ? /^([^-/\s]+)-([^-/\s]+)\/(\d{1,2})$/.exec(i['range']) : null;
  if (!m) throw bad(`the range ${JSON.stringify(i['range'])} is not FIRST-LAST/PREFIX (e.g. 10.0.5.10-10.0.5.200/24)`);
  const [first, last, prefix] = [ipv4ToNumber(m[1]), ipv4ToNumber(m[2]), Number(m[3])];
  if (first === null || last === null) throw bad(`the range ${i['range']} must name two IPv4 addresses`);
  if (prefix < 8 || prefix > 30)
    throw bad(
      `the prefix /${prefix} must be from /8 to /30 (a smaller network has no room for desktops and a gateway)`,
    );
  if (first > last) throw bad(`the range ${i['range']} ends before it starts`);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const network = (first & mask) >>> 0;
  const broadcast = (network | ~mask) >>> 0;
  const cidr = `${numberToIpv4(network)}/${prefix}`;
  if ((last & mask) >>> 0 !== network)
    throw bad(`the range ${i['range']} is not inside ${cidr}: both ends must be in the prefix`);
  if (first === network || last === broadcast)
    throw bad(
      `the range ${i['range']} holds ${first === network ? `${cidr}'s network address` : `${cidr}'s broadcast address`}, which no desktop can have`,
    );
  let gateway: string | null = null;
  if (i['gateway'] !== undefined) {
    const g = ipv4ToNumber(i['gateway']);
    if (g === null) throw bad(`the gateway ${JSON.stringify(i['gateway'])} is not an IPv4 address`);
    if ((g & mask) >>> 0 !== network || g === network || g === broadcast)
      throw bad(`the gateway ${i['gateway']} is not a host of ${cidr}`);
    if (g >= first && g <= last)
      throw bad(
        `the gateway ${i['gateway']} lies inside the range ${i['range']}: a desktop would be given its address; start or end the range beside it`,
      );
    gateway = numberToIpv4(g);
  }
  const dns = i['dns'] ?? [];
  if (!Array.isArray(dns) || dns.length > 3 || dns.some((d) => ipv4ToNumber(d) === null))
    throw bad(`dns must list up to 3 IPv4 addresses, not ${JSON.stringify(dns)}`);
  const net = {
    mode: 'static' as const,
    first: numberToIpv4(first),
    last: numberToIpv4(last),
    prefix,
    gateway,
    dns: dns as string[],
  };
  assertRoomFor(net, size);
  return net;
}

/** The range must hold an address for every desktop the pool may have. */
export function assertRoomFor(net: PoolNetwork, size: number): void {
  if (net.mode !== 'static') return;
  const n = rangeSize(net);
  if (n < size)
    throw new MamoriError(
      'OUT_OF_RANGE',
      `network: the range ${net.first}-${net.last} holds ${n} addresses, fewer than the pool's ${size} desktops: widen it or make the pool smaller`,
      { details: { addresses: n, size } },
    );
}
