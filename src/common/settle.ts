/**
 * Waits for a promise at most `ms`: true when it settled (either way) in time, false on timeout.
 * The timer never keeps the process alive and is cleared as soon as the promise settles.
 */
export function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), Math.max(0, ms));
    timer.unref();
    const settled = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    promise.then(settled, settled);
  });
}

/** `promise`'s outcome, or `timedOut()` thrown once `ms` passed without one. */
export async function within<T>(promise: Promise<T>, ms: number, timedOut: () => Error): Promise<T> {
  if (!(await settlesWithin(promise, ms))) throw timedOut();
  return promise;
}
