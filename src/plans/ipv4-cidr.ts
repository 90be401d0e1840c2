/**
 * IPv4 addresses and networks for IP customization. Pure; the plan validator reports what
 * these return, so each failure says what is wrong in words an operator can act on.
 */
export interface Ipv4Interface {
  address: string;
  prefix: number;
  /** The network's first address, as an integer. */
  network: number;
  broadcast: number;
}

const DOTTED = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function parseIpv4(text: string): number | null {
  const m = DOTTED.exec(text);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  if (parts.some((p, i) => p > 255 || (m[i + 1]!.length > 1 && m[i + 1]!.startsWith('0')))) return null;
  return ((parts[0]! << 24) >>> 0) + (parts[1]! << 16) + (parts[2]! << 8) + parts[3]!;
}

/** `10.1.0.5/24` -> the interface; a string saying what is wrong otherwise. */
export function parseIpv4Interface(text: string): Ipv4Interface | string {
  const slash = text.indexOf('/');
  if (slash < 0)
    return `${JSON.stringify(text)} has no prefix length: write the address with its network, e.g. 10.1.0.5/24`;
  const addr = parseIpv4(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (addr === null) return `${JSON.stringify(text.slice(0, slash))} is not an IPv4 address`;
  if (!/^\d{1,2}$/.test(prefixText) || Number(prefixText) < 1 || Number(prefixText) > 32)
    return `/${prefixText} is not a prefix length from 1 to 32`;
  const prefix = Number(prefixText);
  const mask = prefix === 32 ? 0xffffffff : ~(0xffffffff >>> prefix) >>> 0;
  const network = (addr & mask) >>> 0;
  const broadcast = (network | (~mask >>> 0)) >>> 0;
  if (prefix <= 30 && (addr === network || addr === broadcast)) {
    return `${text} is the ${addr === network ? 'network' : 'broadcast'} address of its network, not a host address`;
  }
  return { address: text.slice(0, slash), prefix, network, broadcast };
}

export function inNetwork(addr: number, net: Ipv4Interface): boolean {
  return addr >= net.network && addr <= net.broadcast;
}
