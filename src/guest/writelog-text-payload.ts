/**
 * The write log's compressible payload (mamori-wl --payload text, kernel command line
 * mamori.wl_payload=text): text that reads like a syslog with prose between its lines, derived
 * from the seq alone so the verifier checks it byte for byte, as it does the random payload.
 * lz4 shrinks it about 2.8x over 1 MiB (256 records), near what it does for real logs and text;
 * the random payload stays the incompressible case.
 *
 * The rule, shared with writelog-writer.c (a change here is a change there):
 *   state = seq * 0x9E3779B97F4A7C15; until 4040 bytes are written:
 *     xorshift64 (<<13, >>7, <<17) the state; r = its upper 32 bits
 *     if (r & 15) < 3: "\n" + PHRASES[(r >> 4) & 7] + decimal((r >> 7) % 10000) + " "
 *     else:            WORDS[(r >> 8) % WORDS.length] + " "
 *   the last token is cut at the payload's end.
 */
export const WL_TEXT_PHRASES = [
  'INFO request served in ',
  'WARN disk latency above ',
  'kernel: eth0 link up, ',
  'systemd[1]: Started session ',
  'GET /index.html HTTP/1.1 200 ',
  'sshd: Accepted publickey for ',
  'cron: job finished with status ',
  'postgres: checkpoint complete: wrote ',
] as const;

export const WL_TEXT_WORDS = (
  'the of and to in is that for it as was with be by on not he this are or his from at which but ' +
  'have an they you were her she there been one all we their has would when if so no will more can ' +
  'out up who them some could into its time than other only new two may first then do any like my ' +
  'now over such our man me even most made after also did many before must through back years where ' +
  'much your way well down should because each just those people how too little state good very make ' +
  'world still own see men work long here get both between life being under never day same another ' +
  'know while last might us great old year off come since against go came right used take three'
).split(' ');

const PHRASE_BYTES = WL_TEXT_PHRASES.map((p) => Buffer.from(`\n${p}`, 'latin1'));
const WORD_BYTES = WL_TEXT_WORDS.map((w) => Buffer.from(`${w} `, 'latin1'));

/** The text payload of `length` bytes for a seq (see the rule above). */
export function writeLogTextPayload(seq: number, length: number, multiplier: bigint): Buffer {
  const out = Buffer.alloc(length);
  const start = (BigInt(seq) * multiplier) & ((1n << 64n) - 1n);
  let hi = Number(start >> 32n) >>> 0;
  let lo = Number(start & 0xffffffffn) >>> 0;
  let pos = 0;
  while (pos < length) {
    // The same two-halves xorshift64 as writeLogPayload.
    let h = ((hi << 13) | (lo >>> 19)) >>> 0;
    let l = (lo << 13) >>> 0;
    hi = (hi ^ h) >>> 0;
    lo = (lo ^ l) >>> 0;
    l = ((lo >>> 7) | (hi << 25)) >>> 0;
    h = hi >>> 7;
    hi = (hi ^ h) >>> 0;
    lo = (lo ^ l) >>> 0;
    h = ((hi << 17) | (lo >>> 15)) >>> 0;
    l = (lo << 17) >>> 0;
    hi = (hi ^ h) >>> 0;
    lo = (lo ^ l) >>> 0;
    const r = hi;
    if ((r & 15) < 3) {
      pos += PHRASE_BYTES[(r >>> 4) & 7]!.copy(out, pos);
      if (pos < length) pos += out.write(`${(r >>> 7) % 10000} `, pos, 'latin1');
    } else {
      pos += WORD_BYTES[(r >>> 8) % WORD_BYTES.length]!.copy(out, pos);
    }
  }
  return out;
}
