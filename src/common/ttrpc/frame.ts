/**
 * ttrpc framing: a 10-byte header (uint32 BE length, uint32 BE stream id, uint8 type, uint8 flags)
 * followed by `length` bytes of protobuf. There is no preface or handshake.
 */

export const FRAME_HEADER_BYTES = 10;
/** Go ttrpc's messageLengthMax. */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 << 20;
/**
 * Above the message cap a peer gets an error reply and its body is skipped; but a length this
 * large is not a plausible message at all (garbage, or a peer speaking another protocol), and
 * skipping it would mean reading up to 4 GiB before the next frame, so the stream is abandoned.
 */
export const DEFAULT_MAX_DISCARD_BYTES = 64 << 20;

const EMPTY = Buffer.alloc(0);

export const MessageType = {
  Request: 1,
  Response: 2,
  Data: 3,
} as const;

export const FrameFlags = {
  RemoteClosed: 0x01,
  RemoteOpen: 0x02,
  NoData: 0x04,
} as const;

export interface FrameHeader {
  length: number;
  streamId: number;
  type: number;
  flags: number;
}

export interface Frame extends FrameHeader {
  payload: Buffer;
}

/**
 * What the decoder yields: complete frames, notice that an over-cap frame was skipped (its body
 * has been fully consumed when this is reported), or a fatal protocol violation after which the
 * decoder ignores all further input.
 */
export type DecodedItem =
  | { kind: 'frame'; frame: Frame }
  | { kind: 'oversized'; header: FrameHeader; maxMessageBytes: number }
  | { kind: 'violation'; reason: string };

export function encodeFrame(streamId: number, type: number, flags: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  out.writeUInt32BE(payload.length, 0);
  out.writeUInt32BE(streamId >>> 0, 4);
  out.writeUInt8(type, 8);
  out.writeUInt8(flags, 9);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

export function readFrameHeader(buf: Uint8Array): FrameHeader {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    length: b.readUInt32BE(0),
    streamId: b.readUInt32BE(4),
    type: b.readUInt8(8),
    flags: b.readUInt8(9),
  };
}

export interface FrameDecoderOptions {
  maxMessageBytes?: number;
  maxDiscardBytes?: number;
}

/**
 * Incremental decoder. Incoming chunks are queued by reference and each byte is copied at most
 * once (only when a header or body spans chunks), so arbitrarily fragmented or coalesced input
 * decodes in linear time. Bodies of over-cap frames are counted off as they arrive, never held.
 */
export class FrameDecoder {
  readonly maxMessageBytes: number;
  readonly maxDiscardBytes: number;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private header: FrameHeader | undefined;
  private discardRemaining = 0;
  private discarding: FrameHeader | undefined;
  private failed = false;

  constructor(options: FrameDecoderOptions = {}) {
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.maxDiscardBytes = Math.max(options.maxDiscardBytes ?? DEFAULT_MAX_DISCARD_BYTES, this.maxMessageBytes);
  }

  /** True after a protocol violation; the stream cannot be resynchronised. */
  get broken(): boolean {
    return this.failed;
  }

  /** Bytes of an incomplete frame currently held (0 between frames). */
  get pendingBytes(): number {
    return this.buffered + (this.header ? FRAME_HEADER_BYTES : 0);
  }

  push(chunk: Uint8Array): DecodedItem[] {
    const items: DecodedItem[] = [];
    if (this.failed || chunk.length === 0) return items;
    let data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);

    for (;;) {
      if (this.discarding) {
        const n = Math.min(this.discardRemaining, data.length);
        this.discardRemaining -= n;
        data = data.subarray(n);
        if (this.discardRemaining > 0) return items;
        items.push({ kind: 'oversized', header: this.discarding, maxMessageBytes: this.maxMessageBytes });
        this.discarding = undefined;
      }
      if (data.length > 0) {
        this.chunks.push(data);
        this.buffered += data.length;
        data = data.subarray(data.length);
      }

      if (!this.header) {
        if (this.buffered < FRAME_HEADER_BYTES) return items;
        const header = readFrameHeader(this.take(FRAME_HEADER_BYTES));
        if (header.length > this.maxDiscardBytes) {
          this.fail();
          items.push({
            kind: 'violation',
            reason: `frame length ${header.length} exceeds ${this.maxDiscardBytes}; not a ttrpc stream`,
          });
          return items;
        }
        if (header.length > this.maxMessageBytes) {
          // Whatever is already buffered belongs to this body: hand it back to the discard path.
          this.discarding = header;
          this.discardRemaining = header.length;
          data = this.drainAll();
          continue;
        }
        this.header = header;
      }

      if (this.buffered < this.header.length) return items;
      const header = this.header;
      this.header = undefined;
      const payload = header.length === 0 ? EMPTY : this.take(header.length);
      items.push({ kind: 'frame', frame: { ...header, payload } });
    }
  }

  /**
   * Upgrade: the bytes of the frame read only in part, exactly as they came (header included), so
   * a new decoder fed them first continues where this one stopped. Throws while discarding an
   * oversized frame, which cannot be handed over.
   */
  unconsumed(): Buffer {
    if (this.discarding) throw new Error('ttrpc: an oversized frame is being discarded');
    const head = this.header ? encodeFrame(this.header.streamId, this.header.type, this.header.flags, Buffer.alloc(0)) : EMPTY;
    const header = this.header ? Buffer.from(head) : EMPTY;
    if (this.header) header.writeUInt32BE(this.header.length, 0);
    return Buffer.concat([header, ...this.chunks]);
  }

  private fail(): void {
    this.failed = true;
    this.chunks = [];
    this.buffered = 0;
    this.header = undefined;
  }

  /** Removes and returns all buffered bytes as one buffer (used only when switching to discard). */
  private drainAll(): Buffer {
    const all = this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks, this.buffered);
    this.chunks = [];
    this.buffered = 0;
    return all;
  }

  /** Removes exactly n (<= buffered) bytes from the front, copying only if they span chunks. */
  private take(n: number): Buffer {
    const first = this.chunks[0] as Buffer;
    if (first.length >= n) {
      this.buffered -= n;
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let used = 0;
    while (filled < n) {
      const chunk = this.chunks[used] as Buffer;
      const want = n - filled;
      if (chunk.length <= want) {
        out.set(chunk, filled);
        filled += chunk.length;
        used++;
      } else {
        out.set(chunk.subarray(0, want), filled);
        filled += want;
        this.chunks[used] = chunk.subarray(want);
      }
    }
    // One splice per take keeps heavily fragmented bodies linear (shift per chunk would not be).
    this.chunks.splice(0, used);
    this.buffered -= n;
    return out;
  }
}
