/**
 * The websocket framing and status decoding of the CRI streaming client (test/e2e/fixtures/
 * cri-stream.ts), without a server: masked client frames decode back to their payload, length
 * encodings at their boundaries, frames split across reads, and exit codes from metav1.Status.
 */
import { describe, expect, it } from 'vitest';
import { decodeFrames, encodeFrame, exitCodeOf } from '../e2e/fixtures/cri-stream';

describe('CRI streaming client framing', () => {
  it('round-trips masked frames of 7-bit, 16-bit and 64-bit lengths', () => {
    for (const len of [0, 1, 125, 126, 127, 65535, 65536, 70000]) {
      const payload = Buffer.alloc(len, 0).map((_, i) => i % 251);
      const frame = encodeFrame(0x2, Buffer.from(payload));
      expect(frame[0]).toBe(0x82);
      expect((frame[1] ?? 0) & 0x80).toBe(0x80); // clients always mask
      const { frames, rest } = decodeFrames(frame);
      expect(rest.length).toBe(0);
      expect(frames).toHaveLength(1);
      expect(frames[0]?.opcode).toBe(0x2);
      expect(frames[0]?.fin).toBe(true);
      expect(Buffer.compare(frames[0]?.payload ?? Buffer.alloc(1), Buffer.from(payload))).toBe(0);
    }
  });

  it('keeps an incomplete frame for the next read and decodes several at once', () => {
    const a = encodeFrame(0x2, Buffer.from('\u0001hello'));
    const b = encodeFrame(0x8, Buffer.from([0x03, 0xe8]));
    const both = Buffer.concat([a, b]);
    for (let cut = 0; cut < both.length; cut++) {
      const first = decodeFrames(both.subarray(0, cut));
      const second = decodeFrames(Buffer.concat([first.rest, both.subarray(cut)]));
      const frames = [...first.frames, ...second.frames];
      expect(frames.map((f) => f.opcode), `cut at ${cut}`).toEqual([0x2, 0x8]);
      expect(frames[0]?.payload.toString()).toBe('\u0001hello');
      expect(second.rest.length).toBe(0);
    }
  });

  it('decodes unmasked server frames', () => {
    const server = Buffer.concat([Buffer.from([0x82, 0x03]), Buffer.from([0x01, 0x68, 0x69])]);
    expect(decodeFrames(server).frames[0]?.payload).toEqual(Buffer.from([0x01, 0x68, 0x69]));
  });

  it('reads exit codes from the error channel status', () => {
    expect(exitCodeOf({ status: 'Success' })).toBe(0);
    expect(exitCodeOf({ status: 'Failure', reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: '42' }] } })).toBe(42);
    expect(exitCodeOf({ status: 'Failure', reason: 'InternalError', message: 'boom' })).toBeUndefined();
    expect(exitCodeOf({ status: 'Failure', reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: 'x' }] } })).toBeUndefined();
    expect(exitCodeOf(undefined)).toBeUndefined();
  });
});
