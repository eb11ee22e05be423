/**
 * `binary://` log URIs on Windows → the logging driver's path and arguments, as runhcs reads them
 * (the URI's path is the driver; each query key is an argument, followed by its value when set).
 * The driver contract itself runs under Wine (test/windows/wine.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { Code } from '../../src/common/errors';
import { driverCommand, isBinaryUri, loggerTag } from '../../src/windows/binary-logger';

describe('binary:// logging driver command', () => {
  it('takes a drive-letter path from the URI path, in Windows form', () => {
    expect(driverCommand('binary:///C:/Program%20Files/logger/driver.exe')).toEqual({ path: 'C:\\Program Files\\logger\\driver.exe', args: [] });
  });

  it('reads binary://C:/x with C: parsed as the host the same way', () => {
    expect(driverCommand('binary://C:/tools/driver.exe').path).toBe('C:\\tools\\driver.exe');
  });

  it('turns the query into arguments: key, then value when not empty, in order', () => {
    expect(driverCommand('binary:///C:/d.exe?--log-dir=&C%3A%5Clogs&-v=debug').args).toEqual(['--log-dir', 'C:\\logs', '-v', 'debug']);
  });

  it('refuses a UNC path and a URI without a driver, as InvalidArgument', () => {
    expect(() => driverCommand('binary:////server/share/d.exe')).toThrow(expect.objectContaining({ code: Code.InvalidArgument }));
    expect(() => driverCommand('binary:///')).toThrow(expect.objectContaining({ code: Code.InvalidArgument }));
  });

  it('recognises the scheme', () => {
    expect(isBinaryUri('binary:///C:/d.exe')).toBe(true);
    expect(isBinaryUri('\\\\.\\pipe\\ctr-1-stdout')).toBe(false);
  });
});

describe('loggerTag (the process part of the pipe names)', () => {
  it('never gives two processes the same pipes: exec `b` of `a` is not container `a-b`, namespaces differ', () => {
    const tags = [loggerTag('ns', 'a', 'b'), loggerTag('ns', 'a-b'), loggerTag('ns', 'a'), loggerTag('ns-2', 'a'), loggerTag('ns', 'a', 'b-c'), loggerTag('ns', 'a-b', 'c')];
    expect(new Set(tags).size).toBe(tags.length);
    expect(loggerTag('k8s.io', 'web-1', 'e1')).toBe('k8s.io+web-1@e1');
  });
});
