/**
 * Parsers for the test guest's serial console. The guest prints (one write per
 * line, so lines never interleave with each other):
 *
 *   mamori-guest ready boot_id=<uuid>
 *   mamori-hb <n> boot_id=<uuid> wl_seq=<last durable seq>
 *   mamori-wl ack <seq>
 *   mamori-wl full | mamori-wl stopped last_seq=<n> | mamori-wl error ...
 *   mamori-guest poweroff last_seq=<n>
 *
 * Kernel messages can still land in front of a line, so matching is anchored
 * at the end of the line only; the tty adds \r before each \n.
 */

export interface Heartbeat {
  n: number;
  bootId: string;
  wlSeq: number;
}

export interface GuestSerialSummary {
  /** Boot ids from `mamori-guest ready` lines, one per boot, in order. */
  boots: string[];
  heartbeats: Heartbeat[];
  acks: number[];
  /** last_seq of each `mamori-guest poweroff` line, in order. */
  poweroffs: number[];
  full: boolean;
  errors: string[];
}

function lines(text: string): string[] {
  return text.split('\n').map((l) => l.replace(/\r+$/, ''));
}

const ACK = /mamori-wl ack (\d+)$/;
const HB = /mamori-hb (\d+) boot_id=([0-9a-f-]{36}) wl_seq=(\d+)$/;
const READY = /mamori-guest ready boot_id=([0-9a-f-]{36})$/;
const POWEROFF = /mamori-guest poweroff last_seq=(\d+)$/;

/** Every acknowledged (durable) seq, in the order the guest printed them. */
export function parseSerialAcks(text: string): number[] {
  const out: number[] = [];
  for (const line of lines(text)) {
    const m = ACK.exec(line);
    if (m) out.push(Number(m[1]));
  }
  return out;
}

export function parseHeartbeats(text: string): Heartbeat[] {
  const out: Heartbeat[] = [];
  for (const line of lines(text)) {
    const m = HB.exec(line);
    if (m) out.push({ n: Number(m[1]), bootId: m[2] as string, wlSeq: Number(m[3]) });
  }
  return out;
}

export function parseGuestSerial(text: string): GuestSerialSummary {
  const summary: GuestSerialSummary = {
    boots: [],
    heartbeats: parseHeartbeats(text),
    acks: parseSerialAcks(text),
    poweroffs: [],
    full: false,
    errors: [],
  };
  for (const line of lines(text)) {
    let m = READY.exec(line);
    if (m) summary.boots.push(m[1] as string);
    m = POWEROFF.exec(line);
    if (m) summary.poweroffs.push(Number(m[1]));
    if (/mamori-wl full$/.test(line)) summary.full = true;
    const e = /(mamori-(?:wl|guest) error .*)$/.exec(line);
    if (e) summary.errors.push(e[1] as string);
  }
  return summary;
}
