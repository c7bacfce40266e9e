// nftables through the nft binary. Scripts go through a 0600 temp file because `nft -f -` fails
// on Node's spawn pipes (ENXIO on /dev/stdin) and long arguments hit E2BIG. A script is one
// transaction: if any line is bad, nft rejects all of it and the old table stays.
// Synchronous temp-file work: tiny files, and node:fs/promises would cost the plugin ~4 ms to load.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandError, inNetns, run, runOk } from './run.ts';

export class NftError extends Error {
  override readonly name = 'NftError';
}

export interface NftOptions {
  readonly netns?: string;
}

export async function applyNftScript(script: string, opts: NftOptions = {}): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'flatnet-nft-'));
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
export async function readNftTable(family: string, name: string, opts: NftOptions = {}): Promise<unknown> {
  const argv = inNetns(opts.netns, ['nft', '-j', 'list', 'table', family, name]);
  const r = await run(argv);
  if (r.code !== 0) {
    if (/No such file or directory/.test(r.stderr)) return undefined;
    throw new NftError(`cannot list table ${family} ${name}`, { cause: new CommandError(argv, r) });
  }
  try {
    return JSON.parse(r.stdout) as unknown;
  } catch (cause) {
    throw new NftError(`unparseable JSON listing table ${family} ${name}`, { cause });
  }
}
