/**
 * The same Task handlers served over gRPC (containerd 2.x may dial shims with it). Connections
 * come from our own listener (the fd `start` handed over) and are injected into grpc-js, so both
 * protocols share one accept path. Payloads pass through as raw bytes: the handlers decode them.
 */
import * as grpc from '@grpc/grpc-js';
import type { Duplex } from 'node:stream';
import { toStatus } from './errors';
import type { ByteHandler } from './task-handlers';

export interface GrpcTaskServer {
  inject(connection: Duplex): void;
  shutdown(graceMs: number): Promise<void>;
}

const passThrough = {
  serialize: (value: Uint8Array): Buffer => Buffer.from(value.buffer, value.byteOffset, value.byteLength),
  deserialize: (bytes: Buffer): Buffer => bytes,
};

export function serviceDefinition(serviceName: string, methods: readonly string[]): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<Buffer, Uint8Array>> = {};
  for (const method of methods) {
    definition[method] = {
      path: `/${serviceName}/${method}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: passThrough.serialize,
      requestDeserialize: passThrough.deserialize,
      responseSerialize: passThrough.serialize,
      responseDeserialize: passThrough.deserialize,
    };
  }
  return definition as grpc.ServiceDefinition;
}

function unaryImplementation(handler: ByteHandler): grpc.handleUnaryCall<Buffer, Uint8Array> {
  return (call, callback) => {
    const abort = new AbortController();
    call.on('cancelled', () => abort.abort(new Error('call cancelled')));
    handler(call.request, { signal: abort.signal }).then(
      (reply) => callback(null, reply),
      (err: unknown) => {
        const status = toStatus(err);
        callback({ code: status.code as number as grpc.status, details: status.message });
      },
    );
  };
}

export function createGrpcTaskServer(
  serviceNames: readonly string[],
  handlers: Readonly<Record<string, ByteHandler>>,
): GrpcTaskServer {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 16 << 20 });
  const methods = Object.keys(handlers);
  for (const name of serviceNames) {
    const implementation: grpc.UntypedServiceImplementation = {};
    for (const method of methods) implementation[method] = unaryImplementation(handlers[method]!);
    server.addService(serviceDefinition(name, methods), implementation);
  }
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  return {
    inject: (connection) => injector.injectConnection(connection),
    shutdown: (graceMs) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
