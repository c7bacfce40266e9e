// Phase timings of one plugin call, printed to stderr when FLATNET_CNI_DEBUG is set: where an ADD's
// milliseconds go (Node's start, compiling, IPAM, the kernel), for operators and for the benchmark docs.
const marks: [string, number][] = [];
const enabled = process.env['FLATNET_CNI_DEBUG'] !== undefined && process.env['FLATNET_CNI_DEBUG'] !== '';

export function mark(phase: string): void {
  if (enabled) marks.push([phase, performance.now()]);
}

/** "phase=12.3ms ...", each the time since the process started (performance.timeOrigin). */
export function timingLine(): string | undefined {
  if (!enabled || marks.length === 0) return undefined;
  return marks.map(([p, t]) => `${p}=${t.toFixed(1)}ms`).join(' ');
}
