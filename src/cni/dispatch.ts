// The protocol edge: environment + stdin in, stdout JSON + exit code out. This is the only place where
// errors become CNI error JSON, and it reproduces libcni/skel's order of checks so a given mistake gets the
// same error code it would get from a reference plugin. Everything unexpected becomes code 999 here.
import { CniError, ErrorCode, errorJson } from './errors.ts';
import { utf8Text } from '../net/utf8.ts';
import { validateContainerID, validateInterfaceName, validateNetworkName } from './identifiers.ts';
import { CURRENT_VERSION, SUPPORTED_VERSIONS, isSupportedVersion, parseSemver, versionAtLeast } from './version.ts';

export type Command = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'VERSION' | 'GC';

export interface Request {
  readonly command: Command;
  readonly containerID: string;
  /** May be empty for DEL (containerd's second DEL). */
  readonly netns: string;
  readonly ifname: string;
  readonly args: string;
  /** CNI_PATH split on ':' (empty entries dropped). */
  readonly path: readonly string[];
  /** The config object from stdin (already parsed JSON, name and cniVersion checked). */
  readonly config: Record<string, unknown>;
  readonly cniVersion: string;
  /** The raw stdin bytes, for delegation to another plugin. */
  readonly stdin: Buffer;
  readonly env: Readonly<Record<string, string | undefined>>;
}

export interface Handlers {
  add(req: Request): Promise<Record<string, unknown>>;
  del(req: Request): Promise<void>;
  check(req: Request): Promise<void>;
  status(req: Request): Promise<void>;
  gc(req: Request): Promise<void>;
}

export interface Outcome {
  readonly stdout: string;
  readonly exitCode: number;
  /** The error, for logging; undefined on success. */
  readonly error?: unknown;
}

const REQUIRED: Record<Command, readonly string[]> = {
  // CNI_PATH is optional in the spec for these verbs (skel requires it); we need it only to delegate.
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  STATUS: [],
  GC: ['CNI_PATH'],
  VERSION: [],
};

const COMMANDS = new Set<string>(['ADD', 'DEL', 'CHECK', 'STATUS', 'VERSION', 'GC']);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export async function dispatch(env: Readonly<Record<string, string | undefined>>, readStdin: () => Buffer, handlers: Handlers): Promise<Outcome> {
  // Errors are answered in the config's version once it is known; before that, in ours.
  let version: string = CURRENT_VERSION;
  try {
    const command = env['CNI_COMMAND'] ?? '';
    if (command === '') throw new CniError(ErrorCode.InvalidEnvironment, 'required env variables [CNI_COMMAND] missing');
    if (!COMMANDS.has(command)) throw new CniError(ErrorCode.InvalidEnvironment, `unknown CNI_COMMAND: ${command.slice(0, 40)}`);
    const cmd = command as Command;
    const missing = REQUIRED[cmd].filter((k) => (env[k] ?? '') === '');
    if (missing.length > 0) throw new CniError(ErrorCode.InvalidEnvironment, `required env variables [${missing.join(',')}] missing`);

    let stdin: Buffer;
    try {
      stdin = readStdin();
    } catch (e) {
      throw new CniError(ErrorCode.IOFailure, 'error reading from stdin', e instanceof Error ? e.message : String(e));
    }

    if (cmd === 'VERSION') {
      // VERSION answers in the version it was asked in when that is one of ours (libcni sends 1.1.0).
      let asked: string = CURRENT_VERSION;
      try {
        const j: unknown = JSON.parse(utf8Text(stdin));
        if (isObject(j) && typeof j['cniVersion'] === 'string' && isSupportedVersion(j['cniVersion'])) asked = j['cniVersion'];
      } catch {
        /* VERSION ignores stdin content */
      }
      return ok(JSON.stringify({ cniVersion: asked, supportedVersions: [...SUPPORTED_VERSIONS] }));
    }

    let config: unknown;
    try {
      config = JSON.parse(utf8Text(stdin));
    } catch (e) {
      throw new CniError(ErrorCode.DecodingFailure, 'error unmarshalling network config from stdin', e instanceof Error ? e.message : String(e));
    }
    if (!isObject(config)) throw new CniError(ErrorCode.DecodingFailure, 'error unmarshalling network config: not a JSON object');
    const cv = config['cniVersion'];
    if (cv !== undefined && typeof cv !== 'string') throw new CniError(ErrorCode.DecodingFailure, 'field "cniVersion" must be a string');
    const cniVersion = cv ?? '0.1.0';
    if (isSupportedVersion(cniVersion)) version = cniVersion;
    const name = config['name'];
    if (name === undefined || name === '') throw new CniError(ErrorCode.InvalidConfig, 'missing network name (field "name")');
    if (typeof name !== 'string') throw new CniError(ErrorCode.InvalidConfig, 'field "name" must be a string');
    validateNetworkName(name);
    if (!parseSemver(cniVersion)) throw new CniError(ErrorCode.DecodingFailure, `field "cniVersion": "${cniVersion.slice(0, 40)}" is not a version`);
    if (cmd === 'CHECK' && !versionAtLeast(cniVersion, '0.4.0')) {
      throw new CniError(ErrorCode.IncompatibleVersion, 'config version does not allow CHECK', `cniVersion is "${cniVersion}"; CHECK needs 0.4.0 or later`);
    }
    if ((cmd === 'GC' || cmd === 'STATUS') && !versionAtLeast(cniVersion, '1.1.0')) {
      throw new CniError(ErrorCode.IncompatibleVersion, `config version does not allow ${cmd}`, `cniVersion is "${cniVersion}"; ${cmd} needs 1.1.0`);
    }
    if (!isSupportedVersion(cniVersion)) {
      throw new CniError(ErrorCode.IncompatibleVersion, 'incompatible CNI versions', `config is "${cniVersion}", plugin supports ${JSON.stringify(SUPPORTED_VERSIONS)}`);
    }

    const containerID = env['CNI_CONTAINERID'] ?? '';
    const ifname = env['CNI_IFNAME'] ?? '';
    if (cmd === 'ADD' || cmd === 'DEL' || cmd === 'CHECK') {
      validateContainerID(containerID);
      validateInterfaceName(ifname);
    }
    const netns = env['CNI_NETNS'] ?? '';
    if (netns !== '' && (cmd === 'ADD' || cmd === 'DEL' || cmd === 'CHECK')) validateNetnsPath(netns);

    const req: Request = {
      command: cmd,
      containerID,
      netns,
      ifname,
      args: env['CNI_ARGS'] ?? '',
      path: (env['CNI_PATH'] ?? '').split(':').filter((p) => p !== ''),
      config,
      cniVersion,
      stdin,
      env,
    };
    switch (cmd) {
      case 'ADD':
        return ok(JSON.stringify(await handlers.add(req)));
      case 'DEL':
        await handlers.del(req);
        return ok('');
      case 'CHECK':
        await handlers.check(req);
        return ok('');
      case 'STATUS':
        await handlers.status(req);
        return ok('');
      case 'GC':
        await handlers.gc(req);
        return ok('');
    }
  } catch (e) {
    const err = e instanceof CniError ? e : new CniError(ErrorCode.Internal, e instanceof Error ? e.message : String(e), undefined, { cause: e });
    return { stdout: JSON.stringify(errorJson(version, err)), exitCode: 1, error: e };
  }
}

function ok(stdout: string): Outcome {
  return { stdout, exitCode: 0 };
}

/** A netns must be an absolute path without NUL or ".." (it is handed to nsenter and ip). */
export function validateNetnsPath(p: string): void {
  if (!p.startsWith('/') || p.includes('\0') || p.split('/').includes('..') || /\s/.test(p) || p.length > 4096) {
    throw new CniError(ErrorCode.InvalidEnvironment, 'CNI_NETNS must be an absolute path to a network namespace', JSON.stringify(p.slice(0, 200)));
  }
}
