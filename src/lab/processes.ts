// The lab's long-running processes: agents, etcd and the echo servers verify starts. linux/run.ts runs
// one-shot commands and waits for them; these must outlive the call (agents and etcd outlive the whole
// `flatnet lab up` process), so they are spawned detached (linux/run.ts) -- argv arrays, never a shell --
// into their own session with output to a log file, and remembered by pid.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { spawnDetached as spawnDetachedProcess } from '../linux/run.ts';

export class SpawnError extends Error {
  override readonly name = 'SpawnError';
}

/** Starts argv detached with output appended to logFile (see linux/run.ts); returns its pid. */
export function spawnDetached(argv: readonly string[], logFile: string, env: NodeJS.ProcessEnv = process.env): number {
  const pid = spawnDetachedProcess(argv, { logFile, env });
  if (pid === undefined) throw new SpawnError(`cannot start ${argv[0] ?? '(nothing)'}`);
  return pid;
}

/** Starts argv as a child of this process with piped output (verify's echo servers). */
export function spawnChild(argv: readonly string[]): ChildProcess {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new SpawnError('spawnChild: empty argv');
  return spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The process's command line, or undefined when it is gone. */
export function cmdlineOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return undefined;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** SIGTERM, then SIGKILL after graceMs for whatever is still alive. Resolves when all are gone (or 2 s after SIGKILL). */
export async function stopPids(pids: readonly number[], graceMs = 3_000): Promise<void> {
  const live = pids.filter((p) => p > 1 && isAlive(p));
  for (const p of live) signal(p, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && live.some(isAlive)) await sleep(50);
  const stubborn = live.filter(isAlive);
  for (const p of stubborn) signal(p, 'SIGKILL');
  const hard = Date.now() + 2_000;
  while (Date.now() < hard && stubborn.some(isAlive)) await sleep(25);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}
