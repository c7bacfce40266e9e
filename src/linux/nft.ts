// nftables through the nft binary. Scripts go through a 0600 temp file because `nft -f -` fails
// on Node's spawn pipes (ENXIO on /dev/stdin) and long arguments hit E2BIG. A script is one
// transaction: if any line is bad, nft rejects all of it and the old table stays.
// Synchronous temp-file work: tiny files, and node:fs/promises would cost the plugin ~4 ms to load.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CommandError, findExecutable, inNetns, run, runOk } from './run.ts';

export class NftError extends Error {
  override readonly name = 'NftError';
}

export interface NftOptions {
  readonly netns?: string;
}

export async function applyNftScript(script: string, opts: NftOptions = {}): Promise<void> {
  // Not os.tmpdir(): node:os is not worth loading into every plugin call for this fallback.
  const dir = mkdtempSync(join(process.env['TMPDIR'] || '/tmp', 'flatnet-nft-'));
  const file = join(dir, 'ruleset.nft');
  try {
    writeFileSync(file, script, { mode: 0o600 });
    await runOk(inNetns(opts.netns, ['nft', '-f', file]));
  } catch (cause) {
    const detail = cause instanceof CommandError ? cause.result.stderr.trim() : String(cause);
    throw new NftError(`nft rejected the script (previous table left unchanged): ${detail}`, { cause });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `nft -j list table FAMILY NAME`, parsed; undefined when the table does not exist. */
export function readNftTable(family: string, name: string, opts: NftOptions = {}): Promise<unknown> {
  return listJson(['table', family, name], opts);
}

/** `nft -j list chain FAMILY TABLE CHAIN`, parsed; undefined when the chain (or its table) does not exist. */
export function readNftChain(family: string, table: string, chain: string, opts: NftOptions = {}): Promise<unknown> {
  return listJson(['chain', family, table, chain], opts);
}

/** `nft -j list tables`, parsed (every table's family and name); undefined when nft is not installed. */
export async function listNftTables(opts: NftOptions = {}): Promise<unknown> {
  if (findExecutable('nft') === undefined) return undefined;
  const argv = inNetns(opts.netns, ['nft', '-j', 'list', 'tables']);
  return parseListing(argv, (await runOk(argv)).stdout);
}

async function listJson(what: readonly string[], opts: NftOptions): Promise<unknown> {
  const argv = inNetns(opts.netns, ['nft', '-j', 'list', ...what]);
  const r = await run(argv);
  if (r.code !== 0) {
    if (/No such file or directory/.test(r.stderr)) return undefined;
    throw new NftError(`cannot list ${what.join(' ')}`, { cause: new CommandError(argv, r) });
  }
  return parseListing(argv, r.stdout);
}

function parseListing(argv: readonly string[], stdout: string): unknown {
  try {
    return JSON.parse(stdout) as unknown;
  } catch (cause) {
    throw new NftError(`unparseable JSON from ${argv.join(' ')}`, { cause });
  }
}
