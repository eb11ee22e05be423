/**
 * The live target: the built shim binary started exactly as containerd 1.6 starts it (no
 * containerd, a private namespace, `TSHIM_SPARE=0`), then fuzzed over its real unix socket on
 * several connections at once. Structured inputs (frame streams around mutated Task requests) are
 * followed by a sentinel Connect on the same connection, so every reply is collected without
 * waiting on a clock; raw byte noise goes to throw-away connections.
 *
 * Never sent to the live daemon: a Create, Checkpoint or Update that decodes (they would run runc
 * or mount things on a shared host; those messages are fuzzed in-process against a fake backend),
 * and a Shutdown that decodes (with no container, it legitimately ends the daemon).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { Code } from '../../src/common/errors';
import { FrameDecoder, MessageType, encodeFrame, type Frame } from '../../src/common/ttrpc/frame';
import { decodeResponse } from '../../src/common/ttrpc/messages';
import { TASK_SERVICE_V2 } from '../../src/common/types';
import {
  OBSERVED_OPTIONS_ANY, Scratch, connectOnce, containerdEnv, daemonPids, encodeConnect, isAlive, requestBody, runShim, startArgs, waitUntil, type ShimBundle,
} from '../e2e/shim-wire-helpers';
import { mutateBytes, type Rng } from './gen';
import { FuzzFinding, checkStatus, classifyBody, frameStream, type FuzzTarget, type RequestClass } from './targets';

const UNSAFE_WHEN_DECODED = new Set(['Create', 'Checkpoint', 'Update', 'Shutdown']);
const LANES = 6;
/** A connection is replaced after this many stream ids (ids must keep increasing). */
const MAX_ID = 0x7ffff000;

/** One client connection that collects frames; resolves waiters on frames and on close. */
class Lane {
  private decoder = new FrameDecoder();
  frames: Frame[] = [];
  closed = false;
  nextId = 1;
  private waiters: Array<() => void> = [];

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const item of this.decoder.push(chunk)) if (item.kind === 'frame') this.frames.push(item.frame);
      this.wake();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  static open(path: string): Promise<Lane> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path });
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new Lane(s));
      });
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Until a frame for `id` arrives or the server closes (no clock involved). */
  async until(id: number): Promise<Frame | undefined> {
    for (;;) {
      const f = this.frames.find((x) => x.streamId === id);
      if (f) return f;
      if (this.closed) return undefined;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/**
 * The complete frames of a stream, minus requests the live daemon must not be sent (see the
 * header comment) and frames whose (mutated) header claims an id at or past the sentinel's.
 */
function safeFrames(bytes: Buffer, sentinel: number, firstId: number): { frames: Buffer[]; requests: Map<number, RequestClass> } {
  const frames: Buffer[] = [];
  const requests = new Map<number, RequestClass>();
  // The server's view of stream ids, so each reply is judged against the request it answers.
  let lastId = firstId - 2;
  for (const item of new FrameDecoder().push(bytes)) {
    if (item.kind !== 'frame') continue;
    const { frame } = item;
    if (frame.streamId >= sentinel) continue;
    const cls = classifyBody(frame.payload);
    if (UNSAFE_WHEN_DECODED.has(cls.method) && cls.decodable) continue;
    frames.push(encodeFrame(frame.streamId, frame.type, frame.flags, frame.payload));
    if (frame.type !== MessageType.Request) continue;
    if (frame.streamId % 2 === 1 && frame.streamId > lastId) {
      lastId = frame.streamId;
      requests.set(frame.streamId, cls);
    }
    // Even or stale ids are refused before decoding: only InvalidArgument is right for them,
    // which is what an undecodable class demands.
    else if (!requests.has(frame.streamId)) requests.set(frame.streamId, { decodable: false, method: '?', known: false });
  }
  return { frames, requests };
}

export interface LiveStats {
  pid: number;
  fdsBefore: number;
  fdsAfter: number;
  responses: number;
  rawInputs: number;
  codes: Record<number, number>;
}

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

export function liveDaemonTarget(onStats?: (s: LiveStats) => void): FuzzTarget & { readonly pid: number } {
  const scratch = new Scratch();
  let b: ShimBundle;
  let pid = -1;
  const lanes: Array<Lane | undefined> = [];
  let work: Array<Promise<void>> = [];
  const findings: FuzzFinding[] = [];
  let counter = 0;
  let rawInputs = 0;
  let responses = 0;
  let fdsBefore = 0;
  const codes: Record<number, number> = {};

  const lane = async (i: number): Promise<Lane> => {
    let l = lanes[i];
    if (!l || l.closed || l.nextId > MAX_ID) {
      l?.destroy();
      l = await Lane.open(b.socketPath);
      lanes[i] = l;
    }
    return l;
  };

  const structured = async (rng: Rng, i: number): Promise<void> => {
    const l = await lane(i);
    const stream = frameStream(rng, l.nextId);
    const { frames, requests } = safeFrames(stream.bytes, stream.lastId, l.nextId);
    const sentinel = stream.lastId;
    l.nextId = sentinel + 2;
    frames.push(encodeFrame(sentinel, MessageType.Request, 0, requestBody(TASK_SERVICE_V2, 'Connect', encodeConnect('fuzz'))));
    l.socket.write(Buffer.concat(frames));
    const answer = await l.until(sentinel);
    if (!answer) throw new FuzzFinding('live-daemon', `connection closed before the sentinel was answered`, Buffer.concat(frames));
    const got = l.frames.splice(0);
    for (const f of got) {
      responses++;
      if (f.type !== MessageType.Response) throw new FuzzFinding('live-daemon', `server sent type ${f.type}`);
      const res = decodeResponse(f.payload);
      const code = res.status?.code ?? 0;
      codes[code] = (codes[code] ?? 0) + 1;
      if (code === 0) continue;
      const req = requests.get(f.streamId);
      checkStatus('live-daemon', code, res.status!.message, req ? req.decodable : true, Buffer.concat(frames));
      if (req && req.known && req.decodable && code === Code.Unimplemented) {
        throw new FuzzFinding('live-daemon', `known method ${req.method} answered Unimplemented`);
      }
    }
    const sentinelReply = decodeResponse(answer.payload);
    if (sentinelReply.status && sentinelReply.status.code !== 0) {
      throw new FuzzFinding('live-daemon', `sentinel Connect failed: ${sentinelReply.status.message}`);
    }
  };

  const raw = async (rng: Rng): Promise<void> => {
    rawInputs++;
    const l = await Lane.open(b.socketPath);
    const stream = frameStream(rng, 1);
    const noise = rng.chance(0.5) ? mutateBytes(rng, Buffer.concat(safeFrames(stream.bytes, stream.lastId, 1).frames)) : rng.bytes(1 + rng.int(64));
    await new Promise<void>((resolve) => l.socket.write(noise, () => resolve()));
    l.destroy();
  };

  return {
    name: 'live-daemon',
    get pid() {
      return pid;
    },
    async setup() {
      b = scratch.bundle('fuzz');
      const run = await runShim(startArgs(b), { cwd: b.dir, env: containerdEnv(b), input: OBSERVED_OPTIONS_ANY, timeoutMs: 30_000 });
      if (run.code !== 0) throw new Error(`start failed: ${run.stderr}`);
      const pids = await daemonPids(b.namespace);
      if (pids.length !== 1) throw new Error(`expected one daemon, found ${pids.join(',')}`);
      pid = pids[0]!;
      await connectOnce(b.socketPath, b.id);
      fdsBefore = fdCount(pid);
    },
    async run(rng) {
      const f = findings.shift();
      if (f) throw f;
      const i = counter++ % LANES;
      const job = (rng.chance(0.1) ? raw(rng) : structured(rng, i)).catch((err: unknown) => {
        findings.push(err instanceof FuzzFinding ? err : new FuzzFinding('live-daemon', `harness: ${(err as Error).message}`));
      });
      work.push(job);
      if (work.length >= LANES) {
        const batch = work;
        work = [];
        await Promise.all(batch);
      }
    },
    async teardown() {
      await Promise.all(work);
      work = [];
      for (const l of lanes.splice(0)) l?.destroy();
      try {
        const problems: string[] = [];
        if (!isAlive(pid)) problems.push(`daemon ${pid} died`);
        else {
          // Still serving a well-behaved client, with the task service intact.
          const reply = await connectOnce(b.socketPath, b.id);
          if (reply.shimPid !== pid) problems.push(`Connect answered by pid ${reply.shimPid}, not ${pid}`);
          // Every fuzz connection is gone once the daemon has seen the hang-ups; a fresh client
          // round trip after closing them orders that (the daemon handles closes in arrival order).
          await connectOnce(b.socketPath, b.id);
        }
        // Upper bound only: the daemon closes its ends as it reads the hang-ups.
        await waitUntil(() => !isAlive(pid) || fdCount(pid) <= fdsBefore, 20_000, 50);
        const fdsAfter = isAlive(pid) ? fdCount(pid) : -1;
        onStats?.({ pid, fdsBefore, fdsAfter, responses, rawInputs, codes });
        if (fdsAfter > fdsBefore + 2) problems.push(`daemon fds grew from ${fdsBefore} to ${fdsAfter}`);
        const f = findings.shift();
        if (f) throw f;
        if (problems.length > 0) throw new FuzzFinding('live-daemon', problems.join('; '));
      } finally {
        await scratch.cleanup();
      }
    },
    stats: () => ({ responses, rawInputs, ...Object.fromEntries(Object.entries(codes).map(([c, n]) => [`code${c}`, n])) }),
  };
}
