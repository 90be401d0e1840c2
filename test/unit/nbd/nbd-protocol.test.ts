import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  NBD_CMD,
  NBD_INFO,
  NBD_OPT,
  NBD_REPLY_TYPE,
  NbdProtocolViolation,
  blockSizeViolation,
  decodeBlockStatus,
  decodeChunkHeader,
  decodeErrorChunk,
  decodeGreeting,
  decodeInfo,
  decodeMetaContext,
  decodeOffsetHole,
  decodeOptionReplyHeader,
  decodeRequestHeader,
  decodeSimpleReplyHeader,
  decodeTransmissionFlags,
  encodeExportRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeRequestHeader,
  errnoName,
  replyName,
} from '../../../src/nbd/nbd-protocol.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('NBD protocol codec (byte layouts from doc/proto.md)', () => {
  it('decodes the newstyle greeting and recognises oldstyle', () => {
    assert.deepEqual(decodeGreeting(hex('4e42444d41474943 49484156454f5054 0003')), {
      style: 'newstyle',
      handshakeFlags: 3,
    });
    assert.equal(decodeGreeting(hex('4e42444d41474943 0000420281861253 0000')).style, 'oldstyle');
    assert.throws(() => decodeGreeting(hex('0000000000000000 49484156454f5054 0003')), NbdProtocolViolation);
  });

  it('encodes options with IHAVEOPT, code, length, data', () => {
    assert.deepEqual(encodeOption(NBD_OPT.STRUCTURED_REPLY), hex('49484156454f5054 00000008 00000000'));
    assert.deepEqual(
      encodeOption(NBD_OPT.GO, encodeExportRequest('ab', [NBD_INFO.BLOCK_SIZE])),
      hex('49484156454f5054 00000007 0000000a 00000002 6162 0001 0003'),
    );
  });

  it('encodes SET_META_CONTEXT data: export name, count, length-prefixed queries', () => {
    assert.deepEqual(
      encodeMetaContextRequest('x', ['base:allocation']),
      Buffer.concat([hex('00000001 78 00000001 0000000f'), Buffer.from('base:allocation')]),
    );
    assert.throws(() => encodeMetaContextRequest('x', ['a\0b']), /NUL/);
  });

  it('decodes option reply headers and checks the magic', () => {
    assert.deepEqual(decodeOptionReplyHeader(hex('0003e889045565a9 00000007 80000005 00000003')), {
      option: 7,
      type: 0x80000005,
      length: 3,
    });
    assert.equal(replyName(0x80000005), 'NBD_REP_ERR_TLS_REQD');
    assert.throws(() => decodeOptionReplyHeader(hex('0003e889045565a8 00000007 00000001 00000000')), /magic/);
  });

  it('decodes NBD_REP_INFO payloads, including unknown types to ignore', () => {
    assert.deepEqual(decodeInfo(hex('0000 0000000000100000 014d')), {
      type: 'export',
      size: 0x100000,
      transmissionFlags: 0x14d,
    });
    assert.deepEqual(decodeInfo(hex('0003 00000001 00001000 02000000')), {
      type: 'block-size',
      min: 1,
      preferred: 4096,
      max: 32 << 20,
    });
    assert.deepEqual(decodeInfo(hex('7777 0102')), { type: 'unknown', infoType: 0x7777 });
    assert.throws(() => decodeInfo(hex('0000 00000000001000')), NbdProtocolViolation);
    assert.deepEqual(decodeMetaContext(Buffer.concat([hex('00000002'), Buffer.from('qemu:dirty-bitmap:b')])), {
      id: 2,
      name: 'qemu:dirty-bitmap:b',
    });
  });

  it('checks advertised block sizes', () => {
    assert.equal(blockSizeViolation({ min: 1, preferred: 4096, max: 32 << 20 }), null);
    assert.match(blockSizeViolation({ min: 3, preferred: 4096, max: 32 << 20 }) ?? '', /minimum/);
    assert.match(blockSizeViolation({ min: 512, preferred: 256, max: 32 << 20 }) ?? '', /preferred/);
    assert.match(blockSizeViolation({ min: 512, preferred: 4096, max: 1024 }) ?? '', /maximum/);
  });

  it('encodes and decodes the 28-byte request header', () => {
    const req = { flags: 1, type: NBD_CMD.WRITE, cookie: 0x0102030405060708n, offset: 0x1_0000_0000, length: 512 };
    const b = encodeRequestHeader(req);
    assert.deepEqual(b, hex('25609513 0001 0001 0102030405060708 0000000100000000 00000200'));
    assert.deepEqual(decodeRequestHeader(b), req);
  });

  it('decodes simple and structured reply headers', () => {
    assert.deepEqual(decodeSimpleReplyHeader(hex('67446698 00000005 00000000000000ff')), { error: 5, cookie: 255n });
    assert.deepEqual(decodeChunkHeader(hex('668e33ef 0001 0002 0000000000000007 0000000c')), {
      flags: 1,
      type: 2,
      cookie: 7n,
      length: 12,
    });
  });

  it('decodes error, hole and block status chunks', () => {
    assert.deepEqual(decodeErrorChunk(NBD_REPLY_TYPE.ERROR, Buffer.concat([hex('00000005 0002'), Buffer.from('no')])), {
      errno: 5,
      message: 'no',
    });
    assert.deepEqual(decodeErrorChunk(NBD_REPLY_TYPE.ERROR_OFFSET, hex('0000001c 0000 0000000000001000')), {
      errno: 28,
      message: '',
      offset: 4096,
    });
    assert.throws(() => decodeErrorChunk(NBD_REPLY_TYPE.ERROR, hex('00000005 0009 6162')), /overruns/);
    assert.deepEqual(decodeOffsetHole(hex('0000000000002000 00001000')), { offset: 8192, length: 4096 });
    assert.throws(() => decodeOffsetHole(hex('0000000000002000 00000000')), /size 0/);
    assert.deepEqual(decodeBlockStatus(hex('00000001 00010000 00000003 00020000 00000000')), {
      contextId: 1,
      descriptors: [
        { length: 65536, flags: 3 },
        { length: 131072, flags: 0 },
      ],
    });
    assert.throws(() => decodeBlockStatus(hex('00000001 00010000')), /4 \+ 8n/);
  });

  it('names errno values, counting unknown ones as EINVAL', () => {
    assert.equal(errnoName(5), 'EIO');
    assert.equal(errnoName(28), 'ENOSPC');
    assert.equal(errnoName(108), 'ESHUTDOWN');
    assert.equal(errnoName(4242), 'EINVAL');
  });

  it('decodes transmission flags', () => {
    const f = decodeTransmissionFlags(0b1_0110_1101);
    assert.deepEqual(
      [f.readOnly, f.canFlush, f.canFua, f.canTrim, f.canWriteZeroes, f.canMultiConn],
      [false, true, true, true, true, true],
    );
  });
});
