// Polling for a condition in tests, with a message that says what never happened and what was seen last.
import assert from 'node:assert/strict';

/** Polls `check` until it returns something truthy; fails naming `what` and the last value after timeoutMs. */
export async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T> | T, intervalMs = 100): Promise<{ value: NonNullable<T>; ms: number }> {
  const t0 = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return { value: v, ms: Date.now() - t0 };
      last = v;
    } catch (e) {
      last = e instanceof Error ? e.message : e;
    }
    if (Date.now() - t0 > timeoutMs) assert.fail(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
