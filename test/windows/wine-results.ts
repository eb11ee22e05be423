/**
 * What a Wine client (wine-client.js, wine-shim-client.js, through wine-containerd.js) left in
 * results.json, with the accessors the tests assert through.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expect } from 'vitest';

/** A Task API call's outcome: the decoded response, or the ttrpc status code and message. */
export interface Call {
  ok: boolean;
  value?: Record<string, unknown>;
  code?: number;
  message?: string;
}

/** A command the client ran: its exit code and output. */
export interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ShimEvent {
  topic: string;
  namespace: string;
  event: Record<string, unknown> | null;
}

interface RawResults {
  steps: Record<string, unknown>;
  events: ShimEvent[];
  errors: string[];
  done?: boolean;
}

export interface ClientResults {
  readonly events: ShimEvent[];
  readonly errors: string[];
  readonly done: boolean;
  /** a recorded step; throws (with the client's errors) when it did not run */
  step<T>(name: string): T;
  /** a call that must have succeeded: its response */
  ok(name: string): Record<string, unknown>;
  /** a call that must have failed with `code`: its message */
  refused(name: string, code: number): string;
  /** topics of the events about container (or exec) `id`, exec events suffixed with `:execId` */
  topics(id: string): string[];
}

export function readIfAny(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** results.json of a client run in `work`; a missing file fails with the client's log and progress. */
export function readResults(work: string, code: number, log: string): ClientResults {
  const file = path.join(work, 'results.json');
  if (!fs.existsSync(file)) {
    throw new Error(`client exited ${code} without results; log:\n${readIfAny(log)}\nprogress:\n${readIfAny(path.join(work, 'progress.log'))}`);
  }
  const raw = JSON.parse(fs.readFileSync(file, 'utf8')) as RawResults;
  const step = <T>(name: string): T => {
    const s = raw.steps[name];
    if (s === undefined) throw new Error(`step ${name} did not run; errors: ${raw.errors.join('\n')}`);
    return s as T;
  };
  return {
    events: raw.events,
    errors: raw.errors,
    done: raw.done === true,
    step,
    ok(name) {
      const s = step<Call>(name);
      expect(s, `${name}: ${s.message ?? ''}`).toMatchObject({ ok: true });
      return s.value ?? {};
    },
    refused(name, code) {
      const s = step<Call>(name);
      expect(s.ok, name).toBe(false);
      expect(s.code, `${name}: ${s.message}`).toBe(code);
      return s.message ?? '';
    },
    topics(id) {
      return raw.events
        .filter((e) => e.event && (e.event['containerId'] === id || e.event['id'] === id))
        .map((e) => `${e.topic}${e.event?.['execId'] ? `:${String(e.event['execId'])}` : ''}`);
    },
  };
}
