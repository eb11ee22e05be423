/**
 * The Task service as a table of byte-level handlers shared by every transport (ttrpc, gRPC):
 * decode the request by its proto type, call the service, encode the reply. Decoding failures are
 * InvalidArgument, as the Go ttrpc server reports them.
 */
import { invalidArgument, wrap } from './errors';
import { logger } from './log';
import { codec } from './proto';
import type { TaskService } from './service';
import { TASK_METHODS } from './types';

export interface HandlerContext {
  signal: AbortSignal;
}

export type ByteHandler = (payload: Buffer, ctx: HandlerContext) => Promise<Uint8Array>;

type ServiceMethod = (request: never, signal?: AbortSignal) => Promise<object>;

/** wire method name → TaskService method */
const METHOD_NAMES: Readonly<Record<string, keyof TaskService>> = {
  State: 'state',
  Create: 'create',
  Start: 'start',
  Delete: 'delete',
  Pids: 'pids',
  Pause: 'pause',
  Resume: 'resume',
  Checkpoint: 'checkpoint',
  Kill: 'kill',
  Exec: 'exec',
  ResizePty: 'resizePty',
  CloseIO: 'closeIO',
  Update: 'update',
  Wait: 'wait',
  Stats: 'stats',
  Connect: 'connect',
  Shutdown: 'shutdown',
};

export function taskHandlers(service: TaskService): Record<string, ByteHandler> {
  const handlers: Record<string, ByteHandler> = {};
  for (const [wireName, types] of Object.entries(TASK_METHODS)) {
    const methodName = METHOD_NAMES[wireName];
    if (!methodName) continue;
    const requestCodec = codec<object>(types.request);
    const responseCodec = codec<object>(types.response);
    const method = (service[methodName] as unknown as ServiceMethod).bind(service);
    handlers[wireName] = async (payload, ctx) => {
      let request: object;
      try {
        request = requestCodec.decode(payload);
      } catch (err) {
        throw invalidArgument(`${wireName}: malformed request: ${(err as Error).message}`);
      }
      logger.debug('rpc', { method: wireName, request: JSON.stringify(request, readableBytes) });
      try {
        return responseCodec.encode(await method(request as never, ctx.signal));
      } catch (err) {
        logger.debug('rpc failed', { method: wireName, error: err });
        throw wrapIfPlain(err, wireName);
      }
    };
  }
  return handlers;
}

/** Any payloads are JSON or protobuf: show them as text, bounded, instead of arrays of numbers. */
function readableBytes(_key: string, value: unknown): unknown {
  if (value && typeof value === 'object' && (value as { type?: unknown }).type === 'Buffer') {
    const data = (value as { data?: number[] }).data ?? [];
    const text = Buffer.from(data.slice(0, 512)).toString('utf8');
    return data.length > 512 ? `${text}…(${data.length} bytes)` : text;
  }
  return value;
}

function wrapIfPlain(err: unknown, method: string): unknown {
  // ShimErrors already say what went wrong in containerd's words; plain errors get context.
  if (err instanceof Error && err.name === 'ShimError') return err;
  return wrap(err, method.toLowerCase());
}
