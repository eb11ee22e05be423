/**
 * The Windows stdio relay against a scripted StdioIo (the HCS pipe HANDLE side) and real sockets
 * (the containerd side; unix sockets here, named pipes on Windows): output copied to EOF, stdin
 * copied and closed on CloseIO, and reads that never end cancelled 1 s after the process exited
 * (HCS does not always deliver EOF), with handles closed only after their call returned.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ProcessInformation, StdioHandle, StdioIo } from '../../src/windows/hcs-api';
import { ProcessRelay, type Upstream } from '../../src/windows/stdio';

const handle = (name: string): StdioHandle => ({ name }) as unknown as StdioHandle;
const nameOf = (h: StdioHandle): string => (h as unknown as { name: string }).name;

class ScriptedIo implements StdioIo {
  log: string[] = [];
  written: string[] = [];
  private readonly chunks = new Map<string, Array<Buffer | 'hang'>>();
  private readonly hung = new Map<string, () => void>();

  feed(h: string, ...items: Array<string | 'hang'>): void {
    this.chunks.set(h, items.map((i) => (i === 'hang' ? 'hang' : Buffer.from(i))));
  }
  read(h: StdioHandle): Promise<Buffer> {
    const next = this.chunks.get(nameOf(h))?.shift();
    if (next === 'hang') return new Promise((resolve) => this.hung.set(nameOf(h), () => resolve(Buffer.alloc(0))));
    return Promise.resolve(next ?? Buffer.alloc(0));
  }
  async write(_h: StdioHandle, data: Buffer): Promise<boolean> {
    this.written.push(data.toString());
    return true;
  }
  cancel(h: StdioHandle): void {
    this.log.push(`cancel ${nameOf(h)}`);
    this.hung.get(nameOf(h))?.();
  }
  close(h: StdioHandle): void {
    this.log.push(`close ${nameOf(h)}`);
  }
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** A connected pair: `ours` is what the shim holds, `theirs` what containerd holds. */
async function pair(): Promise<{ ours: net.Socket; theirs: net.Socket }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tshim-relay-'));
  dirs.push(dir);
  const sock = path.join(dir, 's');
  return new Promise((resolve) => {
    const server = net.createServer((theirs) => {
      server.close();
      resolve({ ours, theirs });
    });
    let ours: net.Socket;
    server.listen(sock, () => (ours = net.connect(sock)));
  });
}

const collect = (s: net.Socket): Promise<string> =>
  new Promise((resolve) => {
    let data = '';
    s.on('data', (d: Buffer) => (data += d.toString()));
    s.on('end', () => resolve(data));
  });

describe('ProcessRelay', () => {
  it('copies stdout to EOF, then closes the HCS handle and ends containerd\'s pipe', async () => {
    const io = new ScriptedIo();
    io.feed('out', 'hello ', 'world');
    const out = await pair();
    const got = collect(out.theirs);
    const info: ProcessInformation = { processId: 1, stdInput: null, stdOutput: handle('out'), stdError: null };
    const relay = new ProcessRelay(io, { stdout: out.ours }, info, async () => undefined);
    expect(await got).toBe('hello world');
    await relay.afterExit();
    expect(io.log).toEqual(['close out']);
  });

  it('after the exit, a read that never ends is cancelled (after 1 s) and only then its handle closed', async () => {
    const io = new ScriptedIo();
    io.feed('out', 'partial', 'hang');
    const out = await pair();
    const got = collect(out.theirs);
    const relay = new ProcessRelay(io, { stdout: out.ours }, { processId: 1, stdInput: null, stdOutput: handle('out'), stdError: null }, async () => undefined);
    await relay.afterExit();
    expect(io.log).toEqual(['cancel out', 'close out']);
    expect(await got).toBe('partial');
  });

  it('copies stdin; CloseIO sends the CloseHandle modify, then closes our end', async () => {
    const io = new ScriptedIo();
    const input = await pair();
    const order: string[] = [];
    const up: Upstream = { stdin: input.ours };
    const relay = new ProcessRelay(io, up, { processId: 1, stdInput: handle('in'), stdOutput: null, stdError: null }, async () => {
      order.push('modify StdIn');
    });
    input.theirs.write('line\r\n');
    await new Promise<void>((resolve) => {
      const check = (): void => (io.written.length > 0 ? resolve() : void setImmediate(check));
      check();
    });
    await relay.closeStdin();
    expect(io.written).toEqual(['line\r\n']);
    expect([...order, ...io.log]).toEqual(['modify StdIn', 'close in']);
    await relay.closeStdin(); // idempotent
    expect(io.log).toEqual(['close in']);
  });
});
