/** The ttrpc transport: framing, envelope codec, server and client. */
export { TtrpcServer } from './server';
export type { TtrpcServerOptions, CallContext, UnaryHandler } from './server';
export { TtrpcClient } from './client';
export type { CallOptions } from './client';
export {
  DEFAULT_MAX_MESSAGE_BYTES,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameFlags,
  MessageType,
  encodeFrame,
} from './frame';
export type { DecodedItem, Frame, FrameHeader } from './frame';
