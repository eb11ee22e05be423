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
      // Ids only: request bodies carry container environments (secrets, with CRI).
      if (logger.isDebugEnabled()) logger.debug('rpc', { method: wireName, ...requestIds(request) });
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

function requestIds(request: object): Record<string, string> {
  const r = request as { id?: unknown; execId?: unknown };
  const ids: Record<string, string> = {};
  if (typeof r.id === 'string' && r.id) ids['task'] = r.id;
  if (typeof r.execId === 'string' && r.execId) ids['exec'] = r.execId;
  return ids;
}

function wrapIfPlain(err: unknown, method: string): unknown {
  // ShimErrors already say what went wrong in containerd's words; plain errors get context.
  if (err instanceof Error && err.name === 'ShimError') return err;
  return wrap(err, method.toLowerCase());
}
