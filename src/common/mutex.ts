/** A FIFO async mutex: one holder at a time, waiters served in arrival order. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  async run<T>(fn: () => Promise<T> | T): Promise<T> {
    const previous = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((resolve) => (release = resolve));
    await previous;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

/** A promise with its resolver exposed, settled once. */
export class Deferred<T> {
  readonly promise: Promise<T>;
  private resolveFn!: (value: T) => void;
  private settledFlag = false;

  constructor() {
    this.promise = new Promise<T>((resolve) => (this.resolveFn = resolve));
  }

  get settled(): boolean {
    return this.settledFlag;
  }

  resolve(value: T): void {
    if (this.settledFlag) return;
    this.settledFlag = true;
    this.resolveFn(value);
  }
}
