import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import fc from 'fast-check';
import { NbdHandshake } from '../../../src/nbd/nbd-handshake.js';
import { NBD_INFO, NBD_MAGIC, NBD_OPT, NBD_REP } from '../../../src/nbd/nbd-protocol.js';
import { applyOps, byteOps, type ByteOp } from '../byte-mutations.js';
import type { FuzzTarget } from '../fuzz-target.js';
import { exactSizes } from '../invariants.js';

/**
 * Fixed newstyle negotiation, client side, against a recorded server: the server's whole
 * side of the conversation arrives at once on a fake socket (the client's writes are
 * dropped), then the socket ends. StreamReader takes the bytes in order whatever the client
 * sent, so a mutated transcript is a server answering wrongly at any step.
 */
interface HandshakeSeed {
  name: string;
  bytes: Buffer;
  metaContexts: string[];
}
interface HandshakeInput {
  seed: HandshakeSeed;
  ops: ByteOp[];
  bytes: Buffer;
}

function greeting(flags: number): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(NBD_MAGIC.INIT_PASSWD, 0);
  b.write('IHAVEOPT', 8, 'latin1');
  b.writeUInt16BE(flags, 16);
  return b;
}

function reply(option: number, type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(20);
  h.writeBigUInt64BE(NBD_MAGIC.OPTION_REPLY, 0);
  h.writeUInt32BE(option, 8);
  h.writeUInt32BE(type, 12);
  h.writeUInt32BE(payload.length, 16);
  return Buffer.concat([h, payload]);
}

function info(type: number, body: number[], widths: number[]): Buffer {
  const b = Buffer.alloc(2 + widths.reduce((a, w) => a + w, 0));
  b.writeUInt16BE(type, 0);
  let at = 2;
  body.forEach((v, i) => {
    const w = widths[i]!;
    if (w === 8) b.writeBigUInt64BE(BigInt(v), at);
    else if (w === 4) b.writeUInt32BE(v, at);
    else b.writeUInt16BE(v, at);
    at += w;
  });
  return b;
}

function metaContext(id: number, name: string): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(id);
  return Buffer.concat([b, Buffer.from(name)]);
}

const GO = Buffer.concat([
  reply(NBD_OPT.GO, NBD_REP.INFO, info(NBD_INFO.EXPORT, [64 << 20, 0x1ef], [8, 2])),
  reply(NBD_OPT.GO, NBD_REP.INFO, info(NBD_INFO.BLOCK_SIZE, [1, 4096, 32 << 20], [4, 4, 4])),
  reply(NBD_OPT.GO, NBD_REP.ACK),
]);

const SEEDS: HandshakeSeed[] = [
  {
    name: 'go-with-meta-context',
    metaContexts: ['base:allocation', 'qemu:dirty-bitmap:b0'],
    bytes: Buffer.concat([
      greeting(3),
      reply(NBD_OPT.STRUCTURED_REPLY, NBD_REP.ACK),
      reply(NBD_OPT.SET_META_CONTEXT, NBD_REP.META_CONTEXT, metaContext(1, 'base:allocation')),
      reply(NBD_OPT.SET_META_CONTEXT, NBD_REP.META_CONTEXT, metaContext(2, 'qemu:dirty-bitmap:b0')),
      reply(NBD_OPT.SET_META_CONTEXT, NBD_REP.ACK),
      GO,
    ]),
  },
  {
    name: 'export-name-fallback',
    metaContexts: [],
    bytes: Buffer.concat([
      greeting(1),
      reply(NBD_OPT.STRUCTURED_REPLY, NBD_REP.ERR_UNSUP),
      reply(NBD_OPT.GO, NBD_REP.ERR_UNSUP, Buffer.from('no GO here')),
      Buffer.from([0, 0, 0, 0, 0x10, 0, 0, 0, 0, 3]),
      Buffer.alloc(124),
    ]),
  },
];

export const nbdHandshakeTarget: FuzzTarget<HandshakeSeed, HandshakeInput> = {
  name: 'nbd-handshake',
  seeds: async () => SEEDS,
  inputs: (seeds) =>
    fc.constantFrom(...seeds).chain((seed) =>
      byteOps(seed.bytes.length, [], { stream: true }).map((ops) => ({
        seed,
        ops,
        bytes: applyOps(seed.bytes, ops),
      })),
    ),
  async run(input) {
    const server = new Duplex({
      read() {},
      write(_chunk, _enc, cb) {
        cb();
      },
    });
    server.push(input.bytes);
    server.push(null);
    const negotiated = await new NbdHandshake(server as unknown as Socket, {
      exportName: '',
      metaContexts: input.seed.metaContexts,
      label: 'fuzz server',
      defaultServername: 'localhost',
    }).run();
    negotiated.socket.destroy();
    const b = negotiated.blockSizes;
    exactSizes('the handshake', { size: negotiated.size, min: b.min, preferred: b.preferred, max: b.max });
    if (!(b.min >= 1 && b.min <= b.preferred && b.preferred <= b.max))
      throw new TypeError(`the handshake accepted block sizes ${b.min}/${b.preferred}/${b.max}`);
  },
  describe: (input) => ({ seed: input.seed.name, ops: input.ops }),
};
