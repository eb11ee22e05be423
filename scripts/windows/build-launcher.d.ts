/** Types of build-launcher.js for the TypeScript tests. */
export declare function buildLauncher(out?: string): string;
