/**
 * Hand-written protobuf codec for the four ttrpc envelope messages (proto/ttrpc.proto and
 * proto/google/rpc/status.proto). The transport deliberately does not depend on the generic
 * protobufjs loader: it stays cheap to load and can be tested on its own.
 *
 * Encoding follows what the Go implementation emits (fields in number order, proto3 defaults
 * omitted). Decoding is strict about structure — truncated or malformed input throws
 * ProtoDecodeError — and lenient about content: unknown fields of every wire type are skipped,
 * and a known field arriving with an unexpected wire type is skipped like an unknown one, which
 * is what protobuf-go does.
 */

export class ProtoDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtoDecodeError';
  }
}

export interface KeyValue {
  key: string;
  value: string;
}

/** google.protobuf.Any */
export interface AnyMessage {
  typeUrl: string;
  value: Buffer;
}

/** google.rpc.Status */
export interface RpcStatus {
  code: number;
  message: string;
  details: AnyMessage[];
}

export interface Request {
  service: string;
  method: string;
  payload: Buffer;
  /** int64 on the wire; bigint so that no value is silently rounded. 0 = no deadline. */
  timeoutNano: bigint;
  metadata: KeyValue[];
}

export interface Response {
  /** Absent means OK. */
  status?: RpcStatus;
  payload: Buffer;
}

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_BYTES = 2;
const WIRE_START_GROUP = 3;
const WIRE_END_GROUP = 4;
const WIRE_FIXED32 = 5;

const EMPTY = Buffer.alloc(0);
// Go rejects invalid UTF-8 in proto3 string fields; a replacing decoder would hide corruption.
const utf8 = new TextDecoder('utf-8', { fatal: true });

// ---------------------------------------------------------------------------------------------
// Encoding

/**
 * Collects small scalar bytes in a scratch array and keeps large byte fields as separate parts,
 * so a multi-megabyte payload is copied exactly once (into the final buffer).
 */
class Writer {
  private readonly parts: Uint8Array[] = [];
  private pending: number[] = [];
  private length = 0;

  private flushPending(): void {
    if (this.pending.length === 0) return;
    this.parts.push(Uint8Array.from(this.pending));
    this.pending = [];
  }

  private byte(b: number): void {
    this.pending.push(b);
    this.length++;
  }

  varint(value: number): void {
    // Only used for non-negative 32-bit values (tags, lengths); >>> keeps it unsigned.
    let v = value >>> 0;
    while (v > 0x7f) {
      this.byte((v & 0x7f) | 0x80);
      v >>>= 7;
    }
    this.byte(v);
  }

  varint64(value: bigint): void {
    // Negative int32/int64 values are sign-extended to ten bytes, as every protobuf encoder does.
    let v = BigInt.asUintN(64, value);
    while (v > 0x7fn) {
      this.byte(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.byte(Number(v));
  }

  tag(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  bytesField(field: number, data: Uint8Array): void {
    this.tag(field, WIRE_BYTES);
    this.varint(data.length);
    if (data.length === 0) return;
    if (data.length <= 64) {
      for (const b of data) this.pending.push(b);
    } else {
      this.flushPending();
      this.parts.push(data);
    }
    this.length += data.length;
  }

  stringField(field: number, value: string): void {
    this.bytesField(field, Buffer.from(value, 'utf8'));
  }

  finish(): Buffer {
    this.flushPending();
    return Buffer.concat(this.parts, this.length);
  }
}

function encodeKeyValue(kv: KeyValue): Buffer {
  const w = new Writer();
  if (kv.key !== '') w.stringField(1, kv.key);
  if (kv.value !== '') w.stringField(2, kv.value);
  return w.finish();
}

function encodeAny(any: AnyMessage): Buffer {
  const w = new Writer();
  if (any.typeUrl !== '') w.stringField(1, any.typeUrl);
  if (any.value.length > 0) w.bytesField(2, any.value);
  return w.finish();
}

export function encodeStatus(status: RpcStatus): Buffer {
  const w = new Writer();
  if (status.code !== 0) {
    w.tag(1, WIRE_VARINT);
    w.varint64(BigInt(status.code | 0));
  }
  if (status.message !== '') w.stringField(2, status.message);
  for (const detail of status.details) w.bytesField(3, encodeAny(detail));
  return w.finish();
}

export function encodeRequest(req: Request): Buffer {
  const w = new Writer();
  if (req.service !== '') w.stringField(1, req.service);
  if (req.method !== '') w.stringField(2, req.method);
  if (req.payload.length > 0) w.bytesField(3, req.payload);
  if (req.timeoutNano !== 0n) {
    w.tag(4, WIRE_VARINT);
    w.varint64(req.timeoutNano);
  }
  for (const kv of req.metadata) w.bytesField(5, encodeKeyValue(kv));
  return w.finish();
}

/** A successful reply carries no status; an empty payload is omitted (a 0-length message). */
export function encodeResponse(res: Response): Buffer {
  const w = new Writer();
  // A present-but-empty status would still be written, as proto3 does for set message fields.
  if (res.status !== undefined) w.bytesField(1, encodeStatus(res.status));
  if (res.payload.length > 0) w.bytesField(2, res.payload);
  return w.finish();
}

// ---------------------------------------------------------------------------------------------
// Decoding

class Reader {
  pos: number;

  constructor(
    private readonly buf: Buffer,
    start: number,
    private readonly end: number,
  ) {
    this.pos = start;
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  /** Returns the varint as two unsigned 32-bit halves; rejects overlong or overflowing input. */
  private varintParts(): [number, number] {
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new ProtoDecodeError('truncated varint');
      const b = this.buf[this.pos++] as number;
      if (i < 4) lo |= (b & 0x7f) << (7 * i);
      else if (i === 4) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x7f) >> 4;
      } else if (i < 9) hi |= (b & 0x7f) << (7 * i - 32);
      else {
        if (b > 1) throw new ProtoDecodeError('varint overflows 64 bits');
        hi |= b << 31;
      }
      if (b < 0x80) return [lo >>> 0, hi >>> 0];
    }
    throw new ProtoDecodeError('varint longer than 10 bytes');
  }

  int64(): bigint {
    const [lo, hi] = this.varintParts();
    return BigInt.asIntN(64, (BigInt(hi) << 32n) | BigInt(lo));
  }

  /** int32 fields keep the low 32 bits, as Go's int32(v) conversion does. */
  int32(): number {
    return this.varintParts()[0] | 0;
  }

  tag(): { field: number; wireType: number } {
    const [lo, hi] = this.varintParts();
    const field = lo >>> 3;
    if (hi !== 0 || field === 0) throw new ProtoDecodeError('invalid field number');
    return { field, wireType: lo & 7 };
  }

  /** A length-delimited field as a zero-copy view into the input. */
  bytes(): Buffer {
    const [lo, hi] = this.varintParts();
    if (hi !== 0 || lo > this.end - this.pos) throw new ProtoDecodeError('truncated length-delimited field');
    const view = this.buf.subarray(this.pos, this.pos + lo);
    this.pos += lo;
    return view;
  }

  string(): string {
    const raw = this.bytes();
    try {
      return utf8.decode(raw);
    } catch {
      throw new ProtoDecodeError('string field is not valid UTF-8');
    }
  }

  private advance(n: number): void {
    if (n > this.end - this.pos) throw new ProtoDecodeError('truncated fixed-width field');
    this.pos += n;
  }

  /** Skips one field whose tag has already been read, including (deprecated) groups. */
  skip(field: number, wireType: number, depth = 0): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varintParts();
        return;
      case WIRE_FIXED64:
        this.advance(8);
        return;
      case WIRE_BYTES:
        this.bytes();
        return;
      case WIRE_FIXED32:
        this.advance(4);
        return;
      case WIRE_START_GROUP: {
        if (depth >= 64) throw new ProtoDecodeError('groups nested too deeply');
        for (;;) {
          if (this.done) throw new ProtoDecodeError('truncated group');
          const inner = this.tag();
          if (inner.wireType === WIRE_END_GROUP) {
            if (inner.field !== field) throw new ProtoDecodeError('mismatched end group');
            return;
          }
          this.skip(inner.field, inner.wireType, depth + 1);
        }
      }
      case WIRE_END_GROUP:
        throw new ProtoDecodeError('unexpected end group');
      default:
        throw new ProtoDecodeError(`invalid wire type ${wireType}`);
    }
  }
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * Walks every field of a message, calling `onField` with the reader positioned at the value.
 * `onField` returns false for fields it did not consume, which are then skipped.
 */
function readMessage(
  data: Uint8Array,
  onField: (r: Reader, field: number, wireType: number) => boolean,
): void {
  const buf = asBuffer(data);
  const r = new Reader(buf, 0, buf.length);
  while (!r.done) {
    const { field, wireType } = r.tag();
    if (!onField(r, field, wireType)) r.skip(field, wireType);
  }
}

function decodeKeyValue(data: Uint8Array): KeyValue {
  const kv: KeyValue = { key: '', value: '' };
  readMessage(data, (r, field, wt) => {
    if (wt !== WIRE_BYTES) return false;
    if (field === 1) kv.key = r.string();
    else if (field === 2) kv.value = r.string();
    else return false;
    return true;
  });
  return kv;
}

function decodeAny(data: Uint8Array): AnyMessage {
  const any: AnyMessage = { typeUrl: '', value: EMPTY };
  readMessage(data, (r, field, wt) => {
    if (wt !== WIRE_BYTES) return false;
    if (field === 1) any.typeUrl = r.string();
    else if (field === 2) any.value = r.bytes();
    else return false;
    return true;
  });
  return any;
}

/** Decodes into `into` when given: a repeated occurrence of a message field merges, per protobuf. */
export function decodeStatus(data: Uint8Array, into?: RpcStatus): RpcStatus {
  const status: RpcStatus = into ?? { code: 0, message: '', details: [] };
  readMessage(data, (r, field, wt) => {
    if (field === 1 && wt === WIRE_VARINT) status.code = r.int32();
    else if (field === 2 && wt === WIRE_BYTES) status.message = r.string();
    else if (field === 3 && wt === WIRE_BYTES) status.details.push(decodeAny(r.bytes()));
    else return false;
    return true;
  });
  return status;
}

/** Payload and bytes fields are views into `data`; copy them if `data` is reused. */
export function decodeRequest(data: Uint8Array): Request {
  const req: Request = { service: '', method: '', payload: EMPTY, timeoutNano: 0n, metadata: [] };
  readMessage(data, (r, field, wt) => {
    if (field === 1 && wt === WIRE_BYTES) req.service = r.string();
    else if (field === 2 && wt === WIRE_BYTES) req.method = r.string();
    else if (field === 3 && wt === WIRE_BYTES) req.payload = r.bytes();
    else if (field === 4 && wt === WIRE_VARINT) req.timeoutNano = r.int64();
    else if (field === 5 && wt === WIRE_BYTES) req.metadata.push(decodeKeyValue(r.bytes()));
    else return false;
    return true;
  });
  return req;
}

export function decodeResponse(data: Uint8Array): Response {
  const res: Response = { payload: EMPTY };
  readMessage(data, (r, field, wt) => {
    if (field === 1 && wt === WIRE_BYTES) res.status = decodeStatus(r.bytes(), res.status);
    else if (field === 2 && wt === WIRE_BYTES) res.payload = r.bytes();
    else return false;
    return true;
  });
  return res;
}
