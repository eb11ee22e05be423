/** Types of wine.js for the TypeScript tests (test/windows/wine-harness.ts, test/e2e/fixtures/sea-build.ts). */
export declare const NODE_WIN_VERSION: string;
export declare const WINE: string;
export declare const MINGW: string;
export declare function missingTools(): string;
export declare function winPath(linux: string): string;
export declare function cachedPackage(spec: string): string;
export declare function windowsNode(): string;
export interface WineRun {
  env: NodeJS.ProcessEnv;
  /** stdout and stderr are appended to this file */
  log: string;
  cwd?: string;
}
export declare function runWine(args: string[], run: WineRun): Promise<number>;
export interface WinePrefix {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  /** ends every process of this prefix (ours alone) */
  stop(): void;
  /** stop(), then removes the prefix */
  destroy(): void;
}
export declare function createPrefix(root: string): Promise<WinePrefix>;
