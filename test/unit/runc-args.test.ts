import { describe, expect, it } from 'vitest';
import { buildArgs, globalArgs, runtimeEnv, type RuntimeConfig } from '../../src/linux/runc';

const base: RuntimeConfig = {
  binary: 'runc',
  root: '/run/containerd/runc/default',
  systemdCgroup: false,
  logPath: '/b/log.json',
};
const prefix = ['--root', '/run/containerd/runc/default', '--log', '/b/log.json', '--log-format', 'json'];

describe('global args', () => {
  it('are root, log, log-format in go-runc order', () => {
    expect(globalArgs(base)).toEqual(prefix);
  });

  it('append --criu then --systemd-cgroup when set', () => {
    expect(globalArgs({ ...base, criuPath: '/usr/sbin/criu', systemdCgroup: true })).toEqual([
      ...prefix,
      '--criu',
      '/usr/sbin/criu',
      '--systemd-cgroup',
    ]);
  });
});

describe('buildArgs', () => {
  it('create: no --detach, absolute pid file, optional flags in order', () => {
    expect(buildArgs(base, { op: 'create', id: 'c1', bundle: '/b', pidFile: '/b/init.pid' })).toEqual([
      ...prefix,
      'create',
      '--bundle',
      '/b',
      '--pid-file',
      '/b/init.pid',
      'c1',
    ]);
    expect(
      buildArgs(base, {
        op: 'create',
        id: 'c1',
        bundle: '/b',
        pidFile: '/b/init.pid',
        consoleSocket: '/tmp/pty1/pty.sock',
        noPivot: true,
        noNewKeyring: true,
      }),
    ).toEqual([
      ...prefix,
      'create',
      '--bundle',
      '/b',
      '--pid-file',
      '/b/init.pid',
      '--console-socket',
      '/tmp/pty1/pty.sock',
      '--no-pivot',
      '--no-new-keyring',
      'c1',
    ]);
  });

  it('exec: --process, console socket, --detach, pid file', () => {
    expect(
      buildArgs(base, {
        op: 'exec',
        id: 'c1',
        processFile: '/tmp/runc-process1',
        pidFile: '/b/e1.pid',
        consoleSocket: '/tmp/s',
      }),
    ).toEqual([
      ...prefix,
      'exec',
      '--process',
      '/tmp/runc-process1',
      '--console-socket',
      '/tmp/s',
      '--detach',
      '--pid-file',
      '/b/e1.pid',
      'c1',
    ]);
  });

  it('kill: numeric signal after the id, --all before it', () => {
    expect(buildArgs(base, { op: 'kill', id: 'c1', signal: 9, all: false }).slice(6)).toEqual(['kill', 'c1', '9']);
    expect(buildArgs(base, { op: 'kill', id: 'c1', signal: 15, all: true }).slice(6)).toEqual([
      'kill',
      '--all',
      'c1',
      '15',
    ]);
  });

  it('simple subcommands', () => {
    const tail = (cmd: Parameters<typeof buildArgs>[1]): string[] => buildArgs(base, cmd).slice(6);
    expect(tail({ op: 'start', id: 'c1' })).toEqual(['start', 'c1']);
    expect(tail({ op: 'delete', id: 'c1', force: false })).toEqual(['delete', 'c1']);
    expect(tail({ op: 'delete', id: 'c1', force: true })).toEqual(['delete', '--force', 'c1']);
    expect(tail({ op: 'state', id: 'c1' })).toEqual(['state', 'c1']);
    expect(tail({ op: 'ps', id: 'c1' })).toEqual(['ps', '--format', 'json', 'c1']);
    expect(tail({ op: 'pause', id: 'c1' })).toEqual(['pause', 'c1']);
    expect(tail({ op: 'resume', id: 'c1' })).toEqual(['resume', 'c1']);
    expect(tail({ op: 'update', id: 'c1' })).toEqual(['update', '--resources', '-', 'c1']);
    expect(tail({ op: 'stats', id: 'c1' })).toEqual(['events', '--stats', 'c1']);
    expect(tail({ op: 'features' })).toEqual(['features']);
    expect(tail({ op: 'version' })).toEqual(['--version']);
  });

  it('checkpoint: criu options, --leave-running unless exiting', () => {
    expect(
      buildArgs(base, {
        op: 'checkpoint',
        id: 'c1',
        imagePath: '/img',
        workPath: '/work',
        leaveRunning: true,
        tcpEstablished: true,
        extUnixSockets: true,
        shellJob: true,
        fileLocks: true,
        emptyNamespaces: ['network', 'ipc'],
        cgroupsMode: 'soft',
      }).slice(6),
    ).toEqual([
      'checkpoint',
      '--image-path',
      '/img',
      '--work-path',
      '/work',
      '--tcp-established',
      '--ext-unix-sk',
      '--shell-job',
      '--manage-cgroups-mode',
      'soft',
      '--file-locks',
      '--empty-ns',
      'network',
      '--empty-ns',
      'ipc',
      '--leave-running',
      'c1',
    ]);
    expect(
      buildArgs(base, { op: 'checkpoint', id: 'c1', imagePath: '/img', workPath: '/w', leaveRunning: false }).slice(6),
    ).toEqual(['checkpoint', '--image-path', '/img', '--work-path', '/w', 'c1']);
  });

  it('restore: --detach, pid file, single-dash -no-subreaper, bundle last', () => {
    expect(
      buildArgs(base, {
        op: 'restore',
        id: 'c1',
        bundle: '/b',
        imagePath: '/img',
        workPath: '/b/work',
        parentPath: '/parent',
        pidFile: '/b/init.pid',
        consoleSocket: '/tmp/s',
        noPivot: true,
      }).slice(6),
    ).toEqual([
      'restore',
      '--image-path',
      '/img',
      '--work-path',
      '/b/work',
      '--parent-path',
      '/parent',
      '--detach',
      '--pid-file',
      '/b/init.pid',
      '--console-socket',
      '/tmp/s',
      '--no-pivot',
      '-no-subreaper',
      '--bundle',
      '/b',
      'c1',
    ]);
  });
});

describe('runtimeEnv', () => {
  it('drops NOTIFY_SOCKET and keeps everything else', () => {
    expect(runtimeEnv({ PATH: '/bin', NOTIFY_SOCKET: '/run/systemd/notify', XDG_RUNTIME_DIR: '/run/user/0' })).toEqual({
      PATH: '/bin',
      XDG_RUNTIME_DIR: '/run/user/0',
    });
  });
});
