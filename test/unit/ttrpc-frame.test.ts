import { describe, expect, it } from 'vitest';
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  DecodedItem,
  Frame,
  FrameDecoder,
  MessageType,
  encodeFrame,
  readFrameHeader,
} from '../../src/common/ttrpc/frame';

function frames(items: DecodedItem[]): Frame[] {
  return items.flatMap((item) => (item.kind === 'frame' ? [item.frame] : []));
}

function header(length: number, streamId: number, type: number, flags = 0): Buffer {
  const b = Buffer.alloc(10);
  b.writeUInt32BE(length, 0);
  b.writeUInt32BE(streamId, 4);
  b[8] = type;
  b[9] = flags;
  return b;
}

const sample = [
  encodeFrame(1, MessageType.Request, 0, Buffer.from('hello')),
  encodeFrame(3, MessageType.Request, 0, Buffer.alloc(0)),
  encodeFrame(5, MessageType.Data, 4, Buffer.alloc(70_000, 0xab)),
  encodeFrame(0xfffffffd, MessageType.Response, 1, Buffer.from([0, 1, 2])),
];

function expectSample(decoded: Frame[]): void {
  expect(decoded.map((f) => [f.streamId, f.type, f.flags, f.length])).toEqual([
    [1, 1, 0, 5],
    [3, 1, 0, 0],
    [5, 3, 4, 70_000],
    [0xfffffffd, 2, 1, 3],
  ]);
  expect(decoded[0]?.payload.toString()).toBe('hello');
  expect(decoded[2]?.payload.equals(Buffer.alloc(70_000, 0xab))).toBe(true);
  expect([...(decoded[3]?.payload ?? [])]).toEqual([0, 1, 2]);
}

describe('ttrpc framing', () => {
  it('lays out the 10-byte header big-endian, as in the observed Connect reply', () => {
    const payload = Buffer.from('120808' + '83ab01' + '1099ab01', 'hex');
    const frame = encodeFrame(3, MessageType.Response, 0, payload);
    expect(frame.toString('hex')).toBe('0000000a000000030200' + payload.toString('hex'));
    expect(readFrameHeader(frame)).toEqual({ length: 10, streamId: 3, type: 2, flags: 0 });
  });

  it('decodes many frames coalesced into one chunk', () => {
    const d = new FrameDecoder();
    expectSample(frames(d.push(Buffer.concat(sample))));
    expect(d.pendingBytes).toBe(0);
  });

  it('decodes frames fed one byte at a time', () => {
    const d = new FrameDecoder();
    const all = Buffer.concat(sample.slice(0, 2).concat(sample.slice(3)));
    const out: Frame[] = [];
    for (let i = 0; i < all.length; i++) out.push(...frames(d.push(all.subarray(i, i + 1))));
    expect(out.map((f) => [f.streamId, f.payload.toString('hex')])).toEqual([
      [1, Buffer.from('hello').toString('hex')],
      [3, ''],
      [0xfffffffd, '000102'],
    ]);
  });

  it('decodes frames split at every possible pair of cut points', () => {
    const all = Buffer.concat([sample[0], sample[1], sample[3]] as Buffer[]);
    for (let a = 0; a <= all.length; a++) {
      for (let b = a; b <= all.length; b++) {
        const d = new FrameDecoder();
        const out = [
          ...frames(d.push(all.subarray(0, a))),
          ...frames(d.push(all.subarray(a, b))),
          ...frames(d.push(all.subarray(b))),
        ];
        expect(out.map((f) => f.streamId)).toEqual([1, 3, 0xfffffffd]);
      }
    }
  });

  it('reassembles a large body delivered in thousands of small chunks', () => {
    const body = Buffer.alloc(1 << 20);
    for (let i = 0; i < body.length; i++) body[i] = i * 31;
    const all = encodeFrame(7, MessageType.Request, 0, body);
    const d = new FrameDecoder();
    const out: Frame[] = [];
    for (let i = 0; i < all.length; i += 97) out.push(...frames(d.push(all.subarray(i, i + 97))));
    expect(out).toHaveLength(1);
    expect(out[0]?.payload.equals(body)).toBe(true);
  });

  it('accepts Uint8Array chunks that are not Buffers', () => {
    const d = new FrameDecoder();
    const bytes = Buffer.concat(sample);
    const plain = new Uint8Array(bytes.length);
    plain.set(bytes);
    expectSample(frames(d.push(plain)));
  });

  it('skips an over-cap body as it arrives, without holding it, then reports it', () => {
    const d = new FrameDecoder();
    const size = 5 << 20;
    const items: DecodedItem[] = [];
    items.push(...d.push(Buffer.concat([header(size, 9, MessageType.Request), Buffer.alloc(1000)])));
    expect(items).toEqual([]);
    expect(d.pendingBytes).toBe(0);
    const chunk = Buffer.alloc(64 * 1024);
    let remaining = size - 1000;
    while (remaining > chunk.length) {
      items.push(...d.push(chunk));
      remaining -= chunk.length;
      expect(d.pendingBytes).toBe(0);
    }
    expect(items).toEqual([]);
    // The last body bytes arrive together with the next frame.
    const next = encodeFrame(11, MessageType.Request, 0, Buffer.from('x'));
    items.push(...d.push(Buffer.concat([Buffer.alloc(remaining), next])));
    expect(items).toHaveLength(2);
    expect(items[0]).toEqual({
      kind: 'oversized',
      header: { length: size, streamId: 9, type: MessageType.Request, flags: 0 },
      maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES,
    });
    expect(items[1]?.kind === 'frame' && items[1].frame.streamId).toBe(11);
  });

  it('treats a header just over the cap as oversized and one at the cap as a frame', () => {
    const d = new FrameDecoder({ maxMessageBytes: 16 });
    expect(frames(d.push(encodeFrame(1, 1, 0, Buffer.alloc(16))))).toHaveLength(1);
    const items = d.push(encodeFrame(3, 1, 0, Buffer.alloc(17)));
    expect(items.map((i) => i.kind)).toEqual(['oversized']);
  });

  it('gives up on an absurd length and ignores everything after it', () => {
    const d = new FrameDecoder();
    const items = d.push(
      Buffer.concat([
        encodeFrame(1, MessageType.Request, 0, Buffer.from('ok')),
        header(100 << 20, 3, MessageType.Request),
        encodeFrame(5, MessageType.Request, 0, Buffer.from('late')),
      ]),
    );
    expect(items.map((i) => i.kind)).toEqual(['frame', 'violation']);
    expect(d.broken).toBe(true);
    expect(d.push(encodeFrame(7, MessageType.Request, 0, Buffer.from('x')))).toEqual([]);
  });

  it('never lowers the discard limit below the message cap', () => {
    const d = new FrameDecoder({ maxMessageBytes: 1 << 20, maxDiscardBytes: 10 });
    expect(d.maxDiscardBytes).toBe(1 << 20);
  });
});
