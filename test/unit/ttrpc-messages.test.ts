import * as path from 'node:path';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import {
  ProtoDecodeError,
  Request,
  Response,
  RpcStatus,
  decodeRequest,
  decodeResponse,
  decodeStatus,
  encodeRequest,
  encodeResponse,
  encodeStatus,
} from '../../src/common/ttrpc/messages';

const root = protobuf.loadSync(path.join(__dirname, '../../proto/ttrpc.proto'));
const PbRequest = root.lookupType('ttrpc.Request');
const PbResponse = root.lookupType('ttrpc.Response');
const PbStatus = root.lookupType('google.rpc.Status');

const TO_OBJECT = { longs: String, bytes: Buffer, defaults: true, arrays: true } as const;

// protobufjs writes every field that is set, Go omits proto3 defaults; build the protobufjs input
// with defaults left out so that both encoders are asked to produce the canonical Go form.
function pbStatus(s: RpcStatus): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (s.code !== 0) o.code = s.code;
  if (s.message !== '') o.message = s.message;
  if (s.details.length > 0) {
    o.details = s.details.map((d) => {
      const any: Record<string, unknown> = {};
      if (d.typeUrl !== '') any.type_url = d.typeUrl;
      if (d.value.length > 0) any.value = d.value;
      return any;
    });
  }
  return o;
}

function pbRequest(r: Request): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (r.service !== '') o.service = r.service;
  if (r.method !== '') o.method = r.method;
  if (r.payload.length > 0) o.payload = r.payload;
  if (r.timeoutNano !== 0n) o.timeoutNano = r.timeoutNano.toString();
  if (r.metadata.length > 0) {
    o.metadata = r.metadata.map((kv) => {
      const m: Record<string, unknown> = {};
      if (kv.key !== '') m.key = kv.key;
      if (kv.value !== '') m.value = kv.value;
      return m;
    });
  }
  return o;
}

function pbResponse(r: Response): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (r.status) o.status = pbStatus(r.status);
  if (r.payload.length > 0) o.payload = r.payload;
  return o;
}

function pbEncode(type: protobuf.Type, obj: Record<string, unknown>): Buffer {
  return Buffer.from(type.encode(type.fromObject(obj)).finish());
}

// Small deterministic PRNG so failures reproduce.
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomString(next: () => number): string {
  const alphabet = ['', 'a', 'Z', '.', '/', 'é', '中', '😀', 'containerd-namespace-ttrpc'];
  let s = '';
  const n = Math.floor(next() * 6);
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(next() * alphabet.length)];
  return s;
}

function randomBytes(next: () => number): Buffer {
  const sizes = [0, 1, 63, 64, 65, 200, 5000];
  const b = Buffer.alloc(sizes[Math.floor(next() * sizes.length)] as number);
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(next() * 256);
  return b;
}

function randomInt64(next: () => number): bigint {
  const picks = [0n, 1n, -1n, 127n, 128n, 2_000_000_000n, 9223372036854775807n, -9223372036854775808n];
  if (next() < 0.5) return picks[Math.floor(next() * picks.length)] as bigint;
  return BigInt.asIntN(64, (BigInt(Math.floor(next() * 2 ** 32)) << 32n) | BigInt(Math.floor(next() * 2 ** 32)));
}

function randomRequest(next: () => number): Request {
  const metadata = Array.from({ length: Math.floor(next() * 4) }, () => ({
    key: randomString(next),
    value: randomString(next),
  }));
  return {
    service: randomString(next),
    method: randomString(next),
    payload: randomBytes(next),
    timeoutNano: randomInt64(next),
    metadata,
  };
}

function randomStatus(next: () => number): RpcStatus {
  const codes = [0, 2, 5, 12, 16, -1, 2147483647, -2147483648];
  return {
    code: codes[Math.floor(next() * codes.length)] as number,
    message: randomString(next),
    details: Array.from({ length: Math.floor(next() * 3) }, () => ({
      typeUrl: randomString(next),
      value: randomBytes(next),
    })),
  };
}

describe('ttrpc messages: encoding matches protobufjs', () => {
  it('encodes a full Request byte-for-byte like protobufjs and round-trips through it', () => {
    const req: Request = {
      service: 'containerd.task.v2.Task',
      method: 'Create',
      payload: Buffer.alloc(300, 7),
      timeoutNano: 5_000_000_000n,
      metadata: [
        { key: 'containerd-namespace-ttrpc', value: 'default' },
        { key: 'k', value: 'v1' },
        { key: 'k', value: 'v2' },
      ],
    };
    const mine = encodeRequest(req);
    expect(mine.toString('hex')).toBe(pbEncode(PbRequest, pbRequest(req)).toString('hex'));
    const viaPb = PbRequest.toObject(PbRequest.decode(mine), TO_OBJECT);
    expect(viaPb).toEqual({
      service: req.service,
      method: req.method,
      payload: req.payload,
      timeoutNano: '5000000000',
      metadata: req.metadata,
    });
    expect(decodeRequest(pbEncode(PbRequest, pbRequest(req)))).toEqual(req);
  });

  it('encodes an all-default Request as zero bytes, like Go', () => {
    const req: Request = { service: '', method: '', payload: Buffer.alloc(0), timeoutNano: 0n, metadata: [] };
    expect(encodeRequest(req).length).toBe(0);
    expect(decodeRequest(Buffer.alloc(0))).toEqual(req);
  });

  it('sign-extends negative int64 and int32 values to ten bytes', () => {
    const req: Request = { service: '', method: '', payload: Buffer.alloc(0), timeoutNano: -1n, metadata: [] };
    expect(encodeRequest(req).toString('hex')).toBe('20ffffffffffffffffff01');
    expect(encodeRequest(req)).toEqual(pbEncode(PbRequest, pbRequest(req)));
    const status: RpcStatus = { code: -2, message: '', details: [] };
    expect(encodeStatus(status)).toEqual(pbEncode(PbStatus, pbStatus(status)));
    expect(decodeStatus(encodeStatus(status)).code).toBe(-2);
  });

  it('matches protobufjs on 500 random Requests in both directions', () => {
    const next = rng(1);
    for (let i = 0; i < 500; i++) {
      const req = randomRequest(next);
      const mine = encodeRequest(req);
      const theirs = pbEncode(PbRequest, pbRequest(req));
      expect(mine.equals(theirs), `request #${i}`).toBe(true);
      expect(decodeRequest(theirs)).toEqual(req);
    }
  });

  it('matches protobufjs on 500 random Responses and Statuses in both directions', () => {
    const next = rng(2);
    for (let i = 0; i < 500; i++) {
      const status = randomStatus(next);
      expect(encodeStatus(status).equals(pbEncode(PbStatus, pbStatus(status))), `status #${i}`).toBe(true);
      const res: Response = next() < 0.3 ? { payload: randomBytes(next) } : { status, payload: randomBytes(next) };
      const theirs = pbEncode(PbResponse, pbResponse(res));
      expect(encodeResponse(res).equals(theirs), `response #${i}`).toBe(true);
      expect(decodeResponse(theirs)).toEqual(res);
    }
  });

  it('encodes success the way the Go shim does: no status, empty payload omitted', () => {
    expect(encodeResponse({ payload: Buffer.alloc(0) }).length).toBe(0);
    expect(encodeResponse({ payload: Buffer.from([1, 2]) }).toString('hex')).toBe('12020102');
    // A present status is written even when empty (set message field), as protobufjs does.
    const withEmpty: Response = { status: { code: 0, message: '', details: [] }, payload: Buffer.alloc(0) };
    expect(encodeResponse(withEmpty)).toEqual(pbEncode(PbResponse, { status: {} }));
  });
});

describe('ttrpc messages: observed containerd 1.6 wire samples (spec appendix A)', () => {
  it('decodes the Connect request and re-encodes it identically', () => {
    const wire = Buffer.concat([
      Buffer.from([0x0a, 0x17]),
      Buffer.from('containerd.task.v2.Task'),
      Buffer.from([0x12, 0x07]),
      Buffer.from('Connect'),
      Buffer.from([0x1a, 0x04, 0x0a, 0x02]),
      Buffer.from('t1'),
    ]);
    expect(wire.length).toBe(0x28);
    const req = decodeRequest(wire);
    expect(req).toEqual({
      service: 'containerd.task.v2.Task',
      method: 'Connect',
      payload: Buffer.from([0x0a, 0x02, 0x74, 0x31]),
      timeoutNano: 0n,
      metadata: [],
    });
    expect(encodeRequest(req)).toEqual(wire);
  });

  it('decodes the error response for pausing a paused container', () => {
    const message = 'cannot pause a paused container';
    const wire = Buffer.concat([Buffer.from([0x0a, 0x23, 0x08, 0x02, 0x12, 0x1f]), Buffer.from(message)]);
    expect(decodeResponse(wire)).toEqual({ status: { code: 2, message, details: [] }, payload: Buffer.alloc(0) });
    expect(encodeResponse({ status: { code: 2, message, details: [] }, payload: Buffer.alloc(0) })).toEqual(wire);
  });
});

describe('ttrpc messages: unknown fields', () => {
  it('skips unknown fields of every wire type, including nested groups', () => {
    const w = protobuf.Writer.create();
    w.uint32((1 << 3) | 2).string('svc');
    w.uint32((10 << 3) | 0).uint64(123456789012345);
    w.uint32((11 << 3) | 1).fixed64(42);
    w.uint32((12 << 3) | 2).bytes(Buffer.from('ignored'));
    w.uint32((13 << 3) | 5).fixed32(7);
    w.uint32((14 << 3) | 3); // start group 14
    w.uint32((1 << 3) | 0).uint32(5);
    w.uint32((2 << 3) | 3); // nested group 2
    w.uint32((1 << 3) | 5).fixed32(9);
    w.uint32((2 << 3) | 4); // end group 2
    w.uint32((14 << 3) | 4); // end group 14
    w.uint32((2 << 3) | 2).string('M');
    // Known field number with the wrong wire type: protobuf-go treats it as unknown.
    w.uint32((4 << 3) | 5).fixed32(1);
    w.uint32((4 << 3) | 0).int64(77);
    const req = decodeRequest(w.finish());
    expect(req.service).toBe('svc');
    expect(req.method).toBe('M');
    expect(req.timeoutNano).toBe(77n);
  });

  it('skips unknown fields inside Status, Any and KeyValue', () => {
    const any = protobuf.Writer.create();
    any.uint32((1 << 3) | 2).string('t');
    any.uint32((9 << 3) | 0).uint32(1);
    any.uint32((2 << 3) | 2).bytes(Buffer.from([1]));
    const status = protobuf.Writer.create();
    status.uint32((7 << 3) | 1).fixed64(1);
    status.uint32((1 << 3) | 0).int32(5);
    status.uint32((3 << 3) | 2).bytes(any.finish());
    const res = protobuf.Writer.create();
    res.uint32((1 << 3) | 2).bytes(status.finish());
    res.uint32((3 << 3) | 5).fixed32(0);
    expect(decodeResponse(res.finish())).toEqual({
      status: { code: 5, message: '', details: [{ typeUrl: 't', value: Buffer.from([1]) }] },
      payload: Buffer.alloc(0),
    });

    const kv = protobuf.Writer.create();
    kv.uint32((3 << 3) | 2).string('x');
    kv.uint32((1 << 3) | 2).string('k');
    const req = protobuf.Writer.create();
    req.uint32((5 << 3) | 2).bytes(kv.finish());
    expect(decodeRequest(req.finish()).metadata).toEqual([{ key: 'k', value: '' }]);
  });

  // The protobuf spec (and protobuf-go) merge a repeated singular message field; protobufjs
  // replaces it instead, so this one is checked against the spec rather than against protobufjs.
  it('merges a repeated status field the way the protobuf spec requires', () => {
    const a = encodeStatus({ code: 5, message: 'first', details: [] });
    const b = encodeStatus({ code: 0, message: 'second', details: [{ typeUrl: 'x', value: Buffer.alloc(0) }] });
    const wire = Buffer.concat([Buffer.from([0x0a, a.length]), a, Buffer.from([0x0a, b.length]), b]);
    expect(decodeResponse(wire).status).toEqual({
      code: 5,
      message: 'second',
      details: [{ typeUrl: 'x', value: Buffer.alloc(0) }],
    });
  });

  it('returns byte fields as views into the input, without copying', () => {
    const wire = encodeRequest({
      service: 's',
      method: 'm',
      payload: Buffer.alloc(1000, 1),
      timeoutNano: 0n,
      metadata: [],
    });
    const req = decodeRequest(wire);
    expect(req.payload.buffer).toBe(wire.buffer);
  });
});

describe('ttrpc messages: malformed input is rejected', () => {
  const cases: Array<[string, number[]]> = [
    ['truncated tag varint', [0x80]],
    ['truncated value varint', [0x20, 0xff]],
    ['length past the end', [0x0a, 0x05, 0x61]],
    ['huge length', [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]],
    ['64-bit length', [0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]],
    ['varint longer than 10 bytes', [0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]],
    ['varint overflowing 64 bits', [0x20, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]],
    ['wire type 6', [0x0e, 0x00]],
    ['wire type 7', [0x0f, 0x00]],
    ['field number 0', [0x02, 0x00]],
    ['end group without start', [0x0c]],
    ['group never ended', [0x53, 0x08, 0x01]],
    ['mismatched end group', [0x53, 0x5c]],
    ['truncated fixed64', [0x59, 1, 2, 3]],
    ['truncated fixed32', [0x5d, 1, 2]],
    ['invalid UTF-8 in a string', [0x0a, 0x02, 0xc3, 0x28]],
    ['truncated nested message', [0x2a, 0x03, 0x0a, 0x05, 0x61]],
  ];

  it.each(cases)('Request: %s', (_name, bytes) => {
    expect(() => decodeRequest(Buffer.from(bytes))).toThrow(ProtoDecodeError);
  });

  it('Response: truncated status and invalid status contents', () => {
    expect(() => decodeResponse(Buffer.from([0x0a, 0x04, 0x08]))).toThrow(ProtoDecodeError);
    expect(() => decodeResponse(Buffer.from([0x0a, 0x02, 0x08, 0x80]))).toThrow(ProtoDecodeError);
    expect(() => decodeResponse(Buffer.from([0x0a, 0x03, 0x12, 0x01, 0xff]))).toThrow(ProtoDecodeError);
  });

  it('never throws anything but ProtoDecodeError on random bytes', () => {
    const next = rng(3);
    for (let i = 0; i < 2000; i++) {
      const bytes = Buffer.alloc(1 + Math.floor(next() * 40));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(next() * 256);
      for (const decode of [decodeRequest, decodeResponse]) {
        try {
          decode(bytes);
        } catch (err) {
          expect(err).toBeInstanceOf(ProtoDecodeError);
        }
      }
    }
  });
});
