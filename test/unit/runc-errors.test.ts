import { describe, expect, it } from 'vitest';
import { Code, ShimError } from '../../src/common/errors';
import {
  classifyKillError,
  classifyRuncError,
  exitText,
  lastLogError,
  NO_SUCH_CONTAINER,
  PROCESS_ALREADY_FINISHED,
  runtimeMessage,
} from '../../src/linux/runc-errors';

// Lines as runc 1.1.5 writes them with --log-format json (captured on this machine).
const execFailed =
  '{"level":"error","msg":"exec failed: unable to start container process: exec: \\"nosuch\\": executable file not found in $PATH","time":"2026-11-28T17:04:59Z"}';
const badSignal = '{"level":"error","msg":"unable to signal init: invalid argument","time":"2026-11-28T17:05:03Z"}';
const notRunning = '{"level":"error","msg":"container not running","time":"2026-11-28T17:05:03Z"}';
const missing = '{"level":"error","msg":"container does not exist","time":"2026-11-28T17:05:03Z"}';
const warning = '{"level":"warning","msg":"signal: killed","time":"2026-11-28T17:05:03Z"}';

const exit = (code: number | null, stderr = '', stdout = '', signal: NodeJS.Signals | null = null) => ({
  code,
  signal,
  stdout: Buffer.from(stdout),
  stderr: Buffer.from(stderr),
});

describe('lastLogError', () => {
  it('takes the last error-level message', () => {
    expect(lastLogError([badSignal, notRunning, ''].join('\n'))).toBe('container not running');
  });

  it('ignores other levels, non-JSON noise and a torn last line', () => {
    expect(lastLogError([execFailed, warning, 'plain text from a wrapper', '{"level":"err'].join('\n'))).toBe(
      'exec failed: unable to start container process: exec: "nosuch": executable file not found in $PATH',
    );
  });

  it('is undefined without error lines', () => {
    expect(lastLogError('')).toBeUndefined();
    expect(lastLogError(warning)).toBeUndefined();
  });
});

describe('runtimeMessage', () => {
  it('prefers the log', () => {
    expect(runtimeMessage(missing, exit(1, 'container does not exist\n'))).toBe('container does not exist');
  });

  it('falls back to "exit status N: <stderr>" like go-runc', () => {
    expect(runtimeMessage('', exit(1, 'boom\n'))).toBe('exit status 1: boom');
    expect(runtimeMessage('', exit(2, '', 'on stdout\n'))).toBe('exit status 2: on stdout');
    expect(runtimeMessage('', exit(1))).toBe('exit status 1');
    expect(exitText(exit(null, '', '', 'SIGKILL'))).toBe('signal: SIGKILL');
  });
});

describe('classifyRuncError', () => {
  it('create/start/exec failures are Unknown "OCI runtime <op> failed: <msg>"', () => {
    const msg = lastLogError(execFailed) as string;
    const err = classifyRuncError('exec', msg);
    expect(err).toBeInstanceOf(ShimError);
    expect(err.code).toBe(Code.Unknown);
    expect(err.message).toBe(
      'OCI runtime exec failed: exec failed: unable to start container process: exec: "nosuch": executable file not found in $PATH',
    );
    expect(classifyRuncError('create', 'x').message).toBe('OCI runtime create failed: x');
    expect(classifyRuncError('start', 'x').message).toBe('OCI runtime start failed: x');
  });

  it('delete failures read like the Go shim', () => {
    const err = classifyRuncError('delete', 'permission denied');
    expect([err.code, err.message]).toEqual([Code.Unknown, 'failed to delete task: permission denied']);
  });

  it('state of a container runc does not know is NotFound', () => {
    expect(classifyRuncError('state', 'container does not exist').code).toBe(Code.NotFound);
    expect(classifyRuncError('state', 'permission denied').code).toBe(Code.Unknown);
  });
});

describe('classifyKillError', () => {
  it.each([
    ['container not running'],
    ['os: process already finished'],
    ['unable to signal init: No such process'],
    ['ESRCH'],
  ])('%s → NotFound "process already finished"', (msg) => {
    const err = classifyKillError(msg);
    expect(err.code).toBe(Code.NotFound);
    expect(err.message).toBe(PROCESS_ALREADY_FINISHED);
  });

  it.each([['container does not exist'], ['container not found']])('%s → NotFound "no such container"', (msg) => {
    const err = classifyKillError(msg);
    expect(err.code).toBe(Code.NotFound);
    expect(err.message).toBe(NO_SUCH_CONTAINER);
  });

  it('anything else is Unknown "unknown error after kill"', () => {
    const err = classifyRuncError('kill', 'unable to signal init: invalid argument');
    expect(err.code).toBe(Code.Unknown);
    expect(err.message).toBe('unknown error after kill: unable to signal init: invalid argument');
  });

  it('keep the Go shim wire texts', () => {
    expect(PROCESS_ALREADY_FINISHED).toBe('process already finished: not found');
    expect(NO_SUCH_CONTAINER).toBe('no such container: not found');
  });
});
