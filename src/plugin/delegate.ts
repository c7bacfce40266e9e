// Delegation to another IPAM plugin by the CNI protocol: find `type` in CNI_PATH, run it with our environment
// (CNI_COMMAND set per verb) and the complete network config on stdin, and read its result or error JSON.
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { CniError, ErrorCode } from '../cni/errors.ts';
import { type Result, parseResult } from '../cni/result.ts';
import { run } from '../linux/run.ts';
import type { Request } from '../cni/dispatch.ts';

export function findPlugin(type: string, path: readonly string[]): string {
  if (path.length === 0) throw new CniError(ErrorCode.InvalidEnvironment, `CNI_PATH is empty; needed to find IPAM plugin "${type}"`);
  for (const dir of path) {
    const p = join(dir, type);
    try {
      if (statSync(p).isFile()) return p;
    } catch {
      /* not in this directory */
    }
  }
  throw new CniError(ErrorCode.InvalidConfig, `failed to find IPAM plugin "${type}" in CNI_PATH`, JSON.stringify(path));
}

export async function execDelegate(req: Request, type: string, command: 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC'): Promise<Result | undefined> {
  const exe = findPlugin(type, req.path);
  const env: NodeJS.ProcessEnv = { ...req.env, CNI_COMMAND: command };
  const r = await run([exe], { input: req.stdin.toString('utf8'), env, timeoutMs: 60_000 });
  if (r.code !== 0) {
    let parsed: { code?: unknown; msg?: unknown; details?: unknown } = {};
    try {
      parsed = JSON.parse(r.stdout) as typeof parsed;
    } catch {
      /* not JSON: use stderr below */
    }
    const code = typeof parsed.code === 'number' ? parsed.code : ErrorCode.DelegateFailed;
    const msg = typeof parsed.msg === 'string' ? parsed.msg : r.stderr.trim() || `exit status ${r.code}`;
    throw new CniError(code, `IPAM plugin ${type} ${command} failed: ${msg}`, typeof parsed.details === 'string' ? parsed.details : undefined);
  }
  if (command !== 'ADD') return undefined;
  try {
    return parseResult(JSON.parse(r.stdout), `result of IPAM plugin ${type}`);
  } catch (e) {
    throw e instanceof CniError ? e : new CniError(ErrorCode.DecodingFailure, `IPAM plugin ${type} printed an undecodable result`, r.stdout.slice(0, 200));
  }
}
