/**
 * A daemon's logger is configured on demand (log.ts): at info level, debug lines and level queries
 * never configure it (nor load winston); the first line at the level configures it once.
 * Its own file: the logger is module state, and this must start from a logger nobody configured.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { PassThrough } from 'stream';
import { describe, expect, it } from 'vitest';
import { configureLogger, configureOnDemand, logger } from '../../src/common/log';
import { until } from '../fixtures/until';

describe('logger configured on demand', () => {
  it('drops lines below the level without configuring, then configures once for the first line at it', async () => {
    const stream = new PassThrough();
    let text = '';
    stream.on('data', (c: Buffer) => (text += c.toString()));
    let configured = 0;
    configureOnDemand('info', () => {
      configured++;
      configureLogger({ level: 'info', stream, fields: { id: 'c1' } });
    });

    logger.debug('rpc', { method: 'State' });
    logger.log('debug', 'also below');
    expect(logger.isDebugEnabled()).toBe(false);
    expect(logger.isLevelEnabled('silly')).toBe(false);
    expect(logger.isInfoEnabled()).toBe(true);
    expect(logger.isErrorEnabled()).toBe(true);
    expect(configured).toBe(0);

    logger.warn('publish failed', { topic: '/tasks/exit' });
    expect(configured).toBe(1);
    logger.info('second');
    logger.debug('still hidden');
    expect(configured).toBe(1);
    await until('the second line', async () => (text.includes('msg=second') ? true : undefined));
    const lines = text.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/ level=warning msg="publish failed" id=c1 topic=\/tasks\/exit$/);
    expect(lines[1]).toMatch(/ level=info msg=second id=c1$/);
  });

  it('preloadLogger (a spare of a containerd at debug level) leaves configuring and the first line nothing to load', () => {
    // A fresh process of the built module: which modules load when is what is under test.
    const log = JSON.stringify(path.resolve(__dirname, '..', '..', 'dist', 'common', 'log.js'));
    const script = `
      const { PassThrough } = require('stream');
      const log = require(${log});
      const loaded = () => Object.keys(require.cache).length;
      const atStart = loaded();
      log.preloadLogger();
      const preloaded = loaded();
      const stream = new PassThrough();
      let text = '';
      stream.on('data', (c) => (text += c));
      log.configureLogger({ level: 'debug', stream, fields: { id: 'c1' } });
      log.logger.debug('rpc', { method: 'Create' });
      setTimeout(() => console.log(JSON.stringify({ atStart, preloaded, after: loaded(), text })), 20);
    `;
    const result = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as Record<string, unknown>;
    expect(result['preloaded']).toBeGreaterThan((result['atStart'] as number) + 20); // winston and its parts
    expect(result['after']).toBe(result['preloaded']);
    expect(result['text']).toMatch(/ level=debug msg=rpc id=c1 method=Create\n$/);
  });
});
