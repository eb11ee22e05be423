/**
 * A minimal protobuf wire-format reader/writer for the handful of flat messages read on the
 * latency-critical `start`/`delete` paths (Any, BootstrapParams, runtime options). Loading
 * protobufjs and our .proto descriptors costs tens of milliseconds that `start` cannot afford;
 * these messages only need varints and length-delimited fields.
 */

import { invalidArgument, ShimError } from './errors';

export enum WireType {
  Varint = 0,
  Fixed64 = 1,
  LengthDelimited = 2,
  Fixed32 = 5,
}

/** One decoded field. Varints stay bigint so int32 negatives (10-byte varints) and uint64 survive. */
export type WireField =
  | { no: number; type: WireType.Varint; varint: bigint }
  | { no: number; type: WireType.LengthDelimited; bytes: Buffer }
  | { no: number; type: WireType.Fixed32 | WireType.Fixed64; bytes: Buffer };

function malformed(what: string): ShimError {
  return invalidArgument(`malformed protobuf: ${what}`);
}

function readVarint(buf: Buffer, pos: number): [bigint, number] {
  let result = 0n;
  let shift = 0n;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) throw malformed('truncated varint');
    const byte = buf[pos++] as number;
    result |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [BigInt.asUintN(64, result), pos];
    shift += 7n;
  }
  throw malformed('varint longer than 10 bytes');
}

/** Splits a message into its fields, in wire order. Throws InvalidArgument on malformed input. */
export function readFields(buf: Buffer): WireField[] {
  const fields: WireField[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const [key, afterKey] = readVarint(buf, pos);
    pos = afterKey;
    const no = Number(key >> 3n);
    const type = Number(key & 7n);
    if (no === 0 || no > 0x1fffffff) throw malformed(`invalid field number ${no}`);
    switch (type) {
      case WireType.Varint: {
        const [varint, next] = readVarint(buf, pos);
        pos = next;
        fields.push({ no, type: WireType.Varint, varint });
        break;
      }
      case WireType.LengthDelimited: {
        const [len, next] = readVarint(buf, pos);
        const end = next + Number(len);
        if (len > BigInt(buf.length) || end > buf.length) throw malformed(`field ${no} overruns buffer`);
        fields.push({ no, type: WireType.LengthDelimited, bytes: buf.subarray(next, end) });
        pos = end;
        break;
      }
      case WireType.Fixed32:
      case WireType.Fixed64: {
        const size = type === WireType.Fixed32 ? 4 : 8;
        if (pos + size > buf.length) throw malformed(`field ${no} overruns buffer`);
        fields.push({ no, type, bytes: buf.subarray(pos, pos + size) });
        pos += size;
        break;
      }
      default:
        // Groups (3/4) are proto2-only and never appear in the messages we read.
        throw malformed(`unsupported wire type ${type} for field ${no}`);
    }
  }
  return fields;
}

/**
 * Typed accessors over a decoded message. proto3 semantics: the last occurrence of a scalar
 * field wins, a missing field is its zero value, and a field sent with the wrong wire type is an
 * error rather than silently misread.
 */
export class WireMessage {
  readonly fields: readonly WireField[];

  constructor(bytes: Buffer) {
    this.fields = readFields(bytes);
  }

  private last(no: number): WireField | undefined {
    for (let i = this.fields.length - 1; i >= 0; i--) {
      const f = this.fields[i] as WireField;
      if (f.no === no) return f;
    }
    return undefined;
  }

  has(no: number): boolean {
    return this.last(no) !== undefined;
  }

  bytes(no: number): Buffer {
    const f = this.last(no);
    if (!f) return Buffer.alloc(0);
    if (f.type !== WireType.LengthDelimited) throw malformed(`field ${no} is not length-delimited`);
    return f.bytes;
  }

  /** All occurrences of a repeated length-delimited field (messages, strings, bytes). */
  repeatedBytes(no: number): Buffer[] {
    const out: Buffer[] = [];
    for (const f of this.fields) {
      if (f.no !== no) continue;
      if (f.type !== WireType.LengthDelimited) throw malformed(`field ${no} is not length-delimited`);
      out.push(f.bytes);
    }
    return out;
  }

  string(no: number): string {
    return this.bytes(no).toString('utf8');
  }

  private varint(no: number): bigint {
    const f = this.last(no);
    if (!f) return 0n;
    if (f.type !== WireType.Varint) throw malformed(`field ${no} is not a varint`);
    return f.varint;
  }

  bool(no: number): boolean {
    return this.varint(no) !== 0n;
  }

  uint32(no: number): number {
    return Number(BigInt.asUintN(32, this.varint(no)));
  }

  int32(no: number): number {
    return Number(BigInt.asIntN(32, this.varint(no)));
  }
}

export interface AnyMessage {
  typeUrl: string;
  value: Buffer;
}

/** google.protobuf.Any{type_url 1, value 2}. */
export function decodeAny(bytes: Buffer): AnyMessage {
  const m = new WireMessage(bytes);
  return { typeUrl: m.string(1), value: Buffer.from(m.bytes(2)) };
}

function encodeVarint(value: number): Buffer {
  const out: number[] = [];
  let v = value;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

function lengthDelimited(no: number, payload: Buffer): Buffer[] {
  return [encodeVarint((no << 3) | WireType.LengthDelimited), encodeVarint(payload.length), payload];
}

/** Encodes google.protobuf.Any; empty fields are omitted as proto3 does. */
export function encodeAny(any: AnyMessage): Buffer {
  const parts: Buffer[] = [];
  if (any.typeUrl) parts.push(...lengthDelimited(1, Buffer.from(any.typeUrl, 'utf8')));
  if (any.value.length > 0) parts.push(...lengthDelimited(2, any.value));
  return Buffer.concat(parts);
}

/** tshim.v1.ReserveRequest { string id = 1 }, for `start` (group.ts), which does not load protobufjs. */
export function encodeReserveRequest(id: string): Buffer {
  return Buffer.concat(lengthDelimited(1, Buffer.from(id, 'utf8')));
}

/** Type URLs are bare proto names from containerd's typeurl, but tolerate `type.googleapis.com/x`. */
export function typeNameOf(typeUrl: string): string {
  const slash = typeUrl.lastIndexOf('/');
  return slash >= 0 ? typeUrl.slice(slash + 1) : typeUrl;
}

function varintField(no: number, value: number): Buffer[] {
  return [encodeVarint((no << 3) | WireType.Varint), encodeVarint(value)];
}

/** google.protobuf.Timestamp for a date at or after 1970 (the only kind the delete path writes). */
function encodeTimestamp(date: Date): Buffer {
  const ms = date.getTime();
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  const parts: Buffer[] = [];
  if (seconds > 0) parts.push(...varintField(1, seconds));
  if (nanos > 0) parts.push(...varintField(2, nanos));
  return Buffer.concat(parts);
}

/**
 * containerd.task.v2.DeleteResponse{pid 1, exit_status 2, exited_at 3}, which the `delete`
 * subcommand prints raw on stdout; encoded here so that path never loads protobufjs.
 */
export function encodeDeleteResponse(r: { pid: number; exitStatus: number; exitedAt: Date }): Buffer {
  const parts: Buffer[] = [];
  if (r.pid > 0) parts.push(...varintField(1, r.pid));
  if (r.exitStatus > 0) parts.push(...varintField(2, r.exitStatus));
  // exited_at is a message: always present, even when its fields are zero.
  parts.push(...lengthDelimited(3, encodeTimestamp(r.exitedAt)));
  return Buffer.concat(parts);
}
