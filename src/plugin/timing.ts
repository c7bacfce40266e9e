// Phase timings of one plugin call, printed to stderr when the call's environment sets FLATNET_CNI_DEBUG:
// where an ADD's milliseconds go (Node's start, compiling, IPAM, the kernel), for operators and for the
// benchmark docs. Module state is per call: a standalone call is a process, and the agent evaluates a
// fresh copy of the plugin's modules for each call it serves.
const marks: [string, number][] = [];
let enabled = false;
let origin = 0;
let heading = { command: '', since: '' };

/**
 * Records marks if `env` asks for them, counted from `from` (performance.now(); 0 is the process's
 * start), which `since` names in the line.
 */
export function startTiming(env: Readonly<Record<string, string | undefined>>, from = 0, since = 'process start'): void {
  enabled = env['FLATNET_CNI_DEBUG'] !== undefined && env['FLATNET_CNI_DEBUG'] !== '';
  origin = from;
  heading = { command: env['CNI_COMMAND'] ?? '', since };
}

export function mark(phase: string): void {
  if (enabled) marks.push([phase, performance.now() - origin]);
}

/** "flatnet-cni ADD timing (ms since ...): phase=12.3ms ...\n", or '' when not recording. */
export function timingLine(): string {
  if (!enabled || marks.length === 0) return '';
  return `flatnet-cni ${heading.command} timing (ms since ${heading.since}): ${marks.map(([p, t]) => `${p}=${t.toFixed(1)}ms`).join(' ')}\n`;
}
