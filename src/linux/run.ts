// The one way flatnet runs an external program: argv arrays, never a shell, so no identifier
// (container ID, interface name, network name) can ever be interpreted as shell syntax.
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { accessSync, closeSync, constants, openSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/**
 * node:child_process, loaded on first use: loading it pulls in net and stream and costs ~6 ms, which the
 * CNI plugin, whose common path starts no process at all, should not pay on every call.
 */
function spawn(cmd: string, args: readonly string[], opts: SpawnOptions): ChildProcess {
  return process.getBuiltinModule('node:child_process').spawn(cmd, args, opts);
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  /** Written to the child's stdin, then stdin is closed. */
  readonly input?: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs?: number;
}

export class CommandError extends Error {
  override readonly name = 'CommandError';
  constructor(
    readonly argv: readonly string[],
    readonly result: RunResult,
  ) {
    super(`${argv.join(' ')} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
  }
}

/** Starts argv with piped stdio and feeds it opts.input; throws on an empty argv. */
function startPiped(argv: readonly string[], opts: RunOptions): ChildProcess {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('run: empty argv');
  const child = spawn(cmd, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: opts.env ?? process.env,
    ...(opts.timeoutMs !== undefined ? { timeout: opts.timeoutMs, killSignal: 'SIGKILL' as const } : {}),
  });
  child.stdin!.on('error', () => {
    /* the child may exit before reading all input; its exit code tells the story */
  });
  child.stdin!.end(opts.input ?? '');
  return child;
}

/** Runs argv[0] with the rest as arguments; resolves with its exit code and output (never rejects on exit code). */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = startPiped(argv, opts);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + (signal ? `\n(killed by ${signal})` : ''),
      });
    });
  });
}

/** Like run(), but rejects with a CommandError when the exit code is not 0. */
export async function runOk(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(argv, opts);
  if (r.code !== 0) throw new CommandError(argv, r);
  return r;
}

/**
 * Like runOk(), but hands stdout to `onLine` one line at a time as it arrives instead of keeping it, for output
 * that grows with the cluster (every route of the main table: ~300 KB of text at 5,000 peers), so the caller
 * holds only what it parses out of it. Rejects with a CommandError (stdout left empty) when the exit code is
 * not 0, or with what `onLine` threw (the child is then killed).
 */
export function runLines(argv: readonly string[], onLine: (line: string) => void, opts: RunOptions = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = startPiped(argv, opts);
    let failed: Error | undefined;
    let pending = '';
    const err: Buffer[] = [];
    const lines = (text: string): void => {
      if (failed !== undefined) return;
      try {
        let start = 0;
        for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
          onLine(text.slice(start, nl));
          start = nl + 1;
        }
        pending = text.slice(start);
      } catch (e) {
        failed = e instanceof Error ? e : new Error('runLines: the line handler failed', { cause: e });
        child.kill('SIGKILL');
      }
    };
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => lines(pending + chunk));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (pending !== '') lines(`${pending}\n`);
      if (failed !== undefined) return reject(failed);
      const result = {
        code: code ?? (signal ? 128 : 1),
        stdout: '',
        stderr: Buffer.concat(err).toString('utf8') + (signal ? `\n(killed by ${signal})` : ''),
      };
      if (result.code !== 0) reject(new CommandError(argv, result));
      else resolve();
    });
  });
}

const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/local/bin', '/usr/bin', '/bin'];

/** Absolute path of an executable found on PATH or in the usual (s)bin directories (an agent's PATH may lack them). */
export function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((d) => d.startsWith('/')), ...SBIN];
  for (const dir of new Set(dirs)) {
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/** A network namespace given by path, or by name under /run/netns (as `ip netns` names them). */
export function netnsPath(netns: string): string {
  return netns.includes('/') ? netns : `/run/netns/${netns}`;
}

/** argv prefix that runs a command inside a network namespace given by path (or name under /run/netns). */
export function inNetns(netns: string | undefined, argv: readonly string[]): string[] {
  if (netns === undefined || netns === '') return [...argv];
  return ['nsenter', `--net=${netnsPath(netns)}`, '--', ...argv];
}

/**
 * Starts argv detached (its own session) and does not wait for it: for work that must not hold up the
 * caller and must not be cut short by the caller's exit (the plugin's nft calls, the lab's agents and etcd).
 * stdin is /dev/null; stdout and stderr go to `logFile` (appended) or nowhere, so a detached child never
 * keeps a runtime's pipes open. Returns its pid.
 */
export function spawnDetached(argv: readonly string[], opts: { readonly logFile?: string; readonly env?: NodeJS.ProcessEnv } = {}): number | undefined {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('spawnDetached: empty argv');
  const fd = opts.logFile !== undefined ? openSync(opts.logFile, 'a') : undefined;
  try {
    const child = spawn(cmd, args, { detached: true, stdio: fd !== undefined ? ['ignore', fd, fd] : 'ignore', env: opts.env ?? process.env });
    child.on('error', () => {
      /* an exec failure shows as a missing pid here, and as missing work to whoever verifies it */
    });
    child.unref();
    return child.pid;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
