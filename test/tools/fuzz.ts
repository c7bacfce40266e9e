// Generators and the oracle for the plugin's fault-injection fuzzer. Every generated case is a valid base
// (env + config the plugin would accept) with one or more *known* defects applied, so the expected outcome
// is known: refused with exit 1, one well-formed CNI error object, a code from a small set, and (where the
// spec demands it) a message naming the offending variable or field. Seeded: FLATNET_FUZZ_SEED overrides.
import fc from 'fast-check';
import assert from 'node:assert/strict';
import { SUPPORTED_VERSIONS } from '../../src/cni/version.ts';
import { tryParseIP } from '../../src/net/ip.ts';

/** The seed every fuzz property runs with; printed in the test names so a failure can be replayed. */
export const FUZZ_SEED = ((): number => {
  const raw = process.env['FLATNET_FUZZ_SEED'];
  if (raw === undefined || raw === '') return 424242;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`FLATNET_FUZZ_SEED must be an integer, got ${JSON.stringify(raw)}`);
  return n;
})();

export type Env = Record<string, string | undefined>;
export type Verb = 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS';
export const VERBS: readonly Verb[] = ['ADD', 'DEL', 'CHECK', 'GC', 'STATUS'];

/** Codes an invalid input may be answered with (SPEC §5 plus flatnet's documented 100-105). 999 never. */
export const ALLOWED_CODES: ReadonlySet<number> = new Set([1, 2, 3, 4, 5, 6, 7, 11, 100, 101, 102, 103, 104, 105]);

/** A case: the env and stdin to hand to the plugin, and what must come back. */
export interface Case {
  readonly label: string;
  readonly env: Env;
  readonly stdin: Buffer;
  /** Acceptable codes; undefined = any allowed code (compound defects). */
  readonly codes?: readonly number[];
  /** Must match msg (or, for a STATUS config error, msg + details: STATUS reports those as 50). */
  readonly mention?: RegExp;
}

export interface Defect {
  readonly label: string;
  /** Verbs for which the defect is guaranteed to be refused before any kernel or disk work. */
  readonly verbs: readonly Verb[];
  readonly codes: readonly number[];
  readonly mention?: RegExp;
  /** True when parseNetConf raises it (STATUS then answers 50 with the original in details). */
  readonly configLevel?: boolean;
  /** Replaces stdin as a whole (the config is then not used). */
  readonly raw?: string;
  apply(env: Env, conf: Record<string, unknown>): void;
}

// ---- identifiers -------------------------------------------------------------------------------------------

const VALID_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
export const validName = fc.stringMatching(/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,30}$/);
/** Container IDs as runtimes send them (64 hex) or shorter legal ones. */
export const validContainerID = fc.oneof(fc.stringMatching(/^[0-9a-f]{64}$/), validName);
/** Interface names the plugin accepts and iproute2 can carry (also see hostileButLegalIfname). */
export const validIfname = fc.oneof(fc.constant('eth0'), fc.stringMatching(/^[a-z][a-z0-9_.-]{0,14}$/));

/** Fragments an attacker reaches for: shell syntax, traversal, line breaks, NUL, replacement chars, lone surrogates. */
export const HOSTILE_FRAGMENTS = [
  ';', '$(id)', '`id`', '|', '&', '&&', '||', '>', '<', '\n', '\r\n', '\t', ' ', '../', '..', '/', '\\', '"', "'", '#', '*', '?', '~',
  '\0', '\uFFFD', '\uD800', '\u202E', 'é', '$IFS', '${PATH}', ':', '=', ',', '%00', '\u0085', '\u00a0',
] as const;

/** Strings built from hostile fragments around arbitrary text, plus 10 kB monsters. */
export const hostileString = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.string({ maxLength: 8 }), fc.constantFrom(...HOSTILE_FRAGMENTS), fc.string({ maxLength: 8 })).map(([a, f, b]) => a + f + b) },
  { weight: 2, arbitrary: fc.array(fc.constantFrom(...HOSTILE_FRAGMENTS), { minLength: 1, maxLength: 6 }).map((xs) => xs.join('')) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('a', ';', '\u00ff', '$(x)'), fc.integer({ min: 1024, max: 10_240 })).map(([c, n]) => c.repeat(n)) },
);

/** What the plugin's identifier rules refuse (libcni's regex, plus a length bound). */
export const isInvalidContainerID = (s: string): boolean => s === '' || s.length > 200 || !VALID_NAME.test(s);
export const isInvalidNetworkName = (s: string): boolean => s === '' || s.length > 253 || !VALID_NAME.test(s);
/** libcni's interface rules plus what iproute2's batch parser would mangle ('#' comments, leading quotes). */
export const isInvalidIfname = (s: string): boolean =>
  s === '' || Buffer.byteLength(s, 'utf8') > 15 || s === '.' || s === '..' || /[/:\s\u0000-\u001f\u007f#"'\uFFFD]/u.test(s);
export const isInvalidDataDir = (s: string): boolean =>
  s === '' || !s.startsWith('/') || s.split('/').includes('..') || s.length > 1024 || /[\u0000-\u001f\u007f]/u.test(s);

export const hostileContainerID = hostileString.filter((s) => s !== '' && isInvalidContainerID(s));
export const hostileIfname = hostileString.filter((s) => s !== '' && isInvalidIfname(s));
export const hostileNetworkName = hostileString.filter((s) => s !== '' && isInvalidNetworkName(s));
export const hostileDataDir = fc.oneof(
  hostileString.filter(isInvalidDataDir),
  fc.constantFrom('relative/dir', '/var/lib/cni/../../etc', '/tmp/a\nb', '/tmp/\0x', `/${'d'.repeat(1100)}`, '..', './x'),
);
/** Legal but nasty: the plugin must use these literally (there is no shell anywhere), not refuse them. */
export const HOSTILE_BUT_LEGAL_IFNAMES = ['a;b', '$(id)', '`id`', 'a|b', 'a&b', 'a>b', '$IFS', 'a\\b', '*', '~x'] as const;

// ---- configs -----------------------------------------------------------------------------------------------

export interface Base {
  readonly env: Env;
  readonly conf: Record<string, unknown>;
}

/** Minimal valid version per verb (CHECK needs 0.4.0, GC/STATUS 1.1.0). */
function versionsFor(verb: Verb): readonly string[] {
  if (verb === 'GC' || verb === 'STATUS') return ['1.1.0'];
  if (verb === 'CHECK') return ['0.4.0', '1.0.0', '1.1.0'];
  return SUPPORTED_VERSIONS;
}

export interface BaseOptions {
  readonly dataDir: string;
  readonly netns: string;
  readonly cniPath: string;
  /** Subnets the base configs may use (all inside 10.99.0.0/16). */
  readonly subnets?: readonly string[];
}

/** A valid env + config for `verb` (valid as far as dispatch and parseNetConf go). */
export function arbBase(verb: Verb, o: BaseOptions): fc.Arbitrary<Base> {
  return fc
    .record({
      version: fc.constantFrom(...versionsFor(verb)),
      name: validName,
      containerID: validContainerID,
      ifname: validIfname,
      bridge: fc.option(fc.stringMatching(/^fl[a-z0-9]{1,8}$/), { nil: undefined }),
      mtu: fc.option(fc.integer({ min: 1280, max: 9000 }), { nil: undefined }),
      isGateway: fc.option(fc.boolean(), { nil: undefined }),
      hairpin: fc.option(fc.boolean(), { nil: undefined }),
      subnet: fc.constantFrom(...(o.subnets ?? ['10.99.0.0/24', '10.99.1.0/24', '10.99.128.0/20'])),
      dns: fc.option(fc.record({ nameservers: fc.constant(['10.99.0.10']) }), { nil: undefined }),
      args: fc.constantFrom('', 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p', 'K8S_POD_NAME=x'),
    })
    .map((r) => {
      const conf: Record<string, unknown> = {
        cniVersion: r.version,
        name: r.name,
        type: 'flatnet',
        ipam: { ranges: [[{ subnet: r.subnet }]], dataDir: o.dataDir },
      };
      if (r.bridge !== undefined) conf['bridge'] = r.bridge;
      if (r.mtu !== undefined) conf['mtu'] = r.mtu;
      if (r.isGateway !== undefined) conf['isGateway'] = r.isGateway;
      if (r.hairpin !== undefined) conf['hairpinMode'] = r.hairpin;
      if (r.dns !== undefined) conf['dns'] = r.dns;
      const env: Env = { CNI_COMMAND: verb, CNI_PATH: o.cniPath };
      if (verb === 'ADD' || verb === 'DEL' || verb === 'CHECK') {
        env['CNI_CONTAINERID'] = r.containerID;
        env['CNI_NETNS'] = o.netns;
        env['CNI_IFNAME'] = r.ifname;
        env['CNI_ARGS'] = r.args;
      }
      if (verb === 'GC') conf['cni.dev/valid-attachments'] = [];
      return { env, conf };
    });
}

// ---- defects -----------------------------------------------------------------------------------------------

const KNOWN_TOP = new Set([
  'cniVersion', 'name', 'type', 'bridge', 'mtu', 'isGateway', 'isDefaultGateway', 'hairpinMode', 'dns', 'ipam', 'capabilities',
  'runtimeConfig', 'args', 'prevResult', 'ipMasq', 'antiSpoofing',
]);
const ALL: readonly Verb[] = VERBS;
const IDS: readonly Verb[] = ['ADD', 'DEL', 'CHECK'];
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Values of the wrong JSON type for a field expecting `kind`. null only where asked for: for most optional
 * fields the plugin reads JSON null as "absent", as Go's encoding/json (and so libcni and the reference
 * plugins) does, which is a valid input, not a defect.
 */
function wrongType(kind: 'string' | 'number' | 'boolean' | 'object' | 'array', withNull = false): fc.Arbitrary<unknown> {
  const all: Record<string, fc.Arbitrary<unknown>> = {
    string: fc.string({ maxLength: 12 }),
    number: fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true })),
    boolean: fc.boolean(),
    object: fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
    array: fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }),
    ...(withNull ? { null: fc.constant(null) } : {}),
  };
  return fc.oneof(...Object.entries(all).filter(([k]) => k !== kind).map(([, a]) => a));
}

const junkValue = fc.oneof(fc.jsonValue({ maxDepth: 4 }), hostileString, fc.constant({ deep: [[[[{ x: [null, {}] }]]]] }));

/** The config's ipam object, replaced by an empty one when an earlier defect made it something else. */
function ipamOf(c: Record<string, unknown>): Record<string, unknown> {
  const v = c['ipam'];
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  const fresh: Record<string, unknown> = {};
  c['ipam'] = fresh;
  return fresh;
}

function setIn(o: Record<string, unknown>, path: readonly string[], v: unknown): void {
  let cur: Record<string, unknown> = o;
  for (const k of path.slice(0, -1)) {
    const next = cur[k];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[path.at(-1)!] = v;
}

/** The catalogue of single defects, each with the outcome it must produce. */
export function arbDefect(): fc.Arbitrary<Defect> {
  const d = (label: string, verbs: readonly Verb[], codes: readonly number[], mention: RegExp | undefined, apply: Defect['apply'], configLevel = false): Defect => ({
    label, verbs, codes, ...(mention ? { mention } : {}), ...(configLevel ? { configLevel } : {}), apply,
  });
  const fieldType = (path: string, kind: Parameters<typeof wrongType>[0], mention: RegExp) =>
    wrongType(kind).map((v) => d(`${path}: wrong type ${JSON.stringify(v)?.slice(0, 40)}`, ALL, [7], mention, (_e, c) => setIn(c, path.split('.'), v), true));
  return fc.oneof(
    // --- environment
    fc.constantFrom(undefined, '').map((v) => d('CNI_COMMAND missing', ALL, [4], /CNI_COMMAND/, (e) => { e['CNI_COMMAND'] = v; })),
    fc.oneof(hostileString, fc.constantFrom('add', 'Add', 'DELETE', 'VERSION ', ' ADD', 'GC\n'))
      .filter((s) => s !== '' && !['ADD', 'DEL', 'CHECK', 'STATUS', 'VERSION', 'GC'].includes(s))
      .map((v) => d('CNI_COMMAND unknown', ALL, [4], /CNI_COMMAND/, (e) => { e['CNI_COMMAND'] = v; })),
    fc.constantFrom('CNI_CONTAINERID', 'CNI_IFNAME').chain((k) =>
      fc.constantFrom(undefined, '').map((v) => d(`${k} missing`, IDS, [4], new RegExp(k), (e) => { e[k] = v; }))),
    fc.constantFrom(undefined, '').map((v) => d('CNI_NETNS missing', ['ADD', 'CHECK'], [4], /CNI_NETNS/, (e) => { e['CNI_NETNS'] = v; })),
    fc.constant(d('CNI_PATH missing', ['GC'], [4], /CNI_PATH/, (e) => { delete e['CNI_PATH']; })),
    hostileContainerID.map((v) => d(`CNI_CONTAINERID hostile`, IDS, [4], /CNI_CONTAINERID/, (e) => { e['CNI_CONTAINERID'] = v; })),
    hostileIfname.map((v) => d(`CNI_IFNAME hostile`, IDS, [4], /CNI_IFNAME/, (e) => { e['CNI_IFNAME'] = v; })),
    fc.oneof(hostileString.filter((s) => s !== '' && (!s.startsWith('/') || /\s|\0/.test(s) || s.split('/').includes('..'))), fc.constantFrom('netns', '../run/netns/x', '/run/netns/../x', '/run/netns/a b'))
      .map((v) => d('CNI_NETNS invalid', IDS, [4], /CNI_NETNS/, (e) => { e['CNI_NETNS'] = v; })),
    // --- CNI_ARGS (only ADD reads it before touching anything)
    fc.oneof(fc.constantFrom('a', 'a==b', '=x', 'K8S_POD_NAME', 'a=b=c', 'IgnoreUnknown=1;x'), fc.tuple(hostileString, hostileString).map(([a, b]) => `${a}=${b}=`))
      .filter((s) => s.split(';').some((p) => p !== '' && (p.split('=').length !== 2 || p.startsWith('='))))
      .map((v) => d('CNI_ARGS invalid pair', ['ADD'], [4], /CNI_ARGS/, (e) => { e['CNI_ARGS'] = v; })),
    fc.stringMatching(/^[A-Za-z_]{1,12}$/).filter((k) => !['IgnoreUnknown', 'IP', 'MAC', 'K8S_POD_NAMESPACE', 'K8S_POD_NAME', 'K8S_POD_INFRA_CONTAINER_ID', 'K8S_POD_UID'].includes(k))
      .map((k) => d('CNI_ARGS unknown key', ['ADD'], [4], /CNI_ARGS/, (e) => { e['CNI_ARGS'] = `${k}=1`; })),
    fc.oneof(hostileString, fc.constantFrom('10.99.0.300', '10.99', 'fd00::g', '1.2.3.4.5'))
      .filter((s) => s.trim() !== '' && !/[;=,]/.test(s) && tryParseIP(s.split('/')[0]!) === undefined)
      .map((v) => d('CNI_ARGS IP= not an address', ['ADD'], [4, 7], /CNI_ARGS/, (e) => { e['CNI_ARGS'] = `IgnoreUnknown=1;IP=${v}`; })),
    fc.constantFrom('zz', '01:02:03:04:05', 'gg:00:00:00:00:00', '$(id)')
      .map((v) => d('CNI_ARGS MAC= not a MAC', ['ADD'], [4, 7], /CNI_ARGS|MAC/, (e) => { e['CNI_ARGS'] = `IgnoreUnknown=1;MAC=${v}`; })),
    // --- the config's framing: JSON, object, name, version
    fc.oneof(hostileString, fc.constantFrom('', '{', '{"name":', 'null,', '{"a":1}{"b":2}', '\uFEFF{}'))
      .filter((s) => { try { JSON.parse(s); return false; } catch { return true; } })
      .map((s) => ({ ...d('stdin not JSON', ALL, [6], undefined, () => undefined), raw: s })),
    fc.oneof(fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }), fc.string(), fc.integer(), fc.boolean(), fc.constant(null))
      .map((v) => ({ ...d('stdin JSON but not an object', ALL, [6], undefined, () => undefined), raw: JSON.stringify(v) })),
    wrongType('string', true).map((v) => d('cniVersion wrong type', ALL, [6], /cniVersion/, (_e, c) => { c['cniVersion'] = v; })),
    fc.oneof(hostileString, fc.constantFrom('1.1', 'v1.1.0', '1.1.0 ', '01.1.0', '1.1.0-rc1', '\u0661.1.0'))
      .filter((s) => s !== '' && !/^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$/.test(s))
      .map((v) => d('cniVersion not a version', ALL, [6], /cniVersion/, (_e, c) => { c['cniVersion'] = v; })),
    fc.constantFrom('0.1.0', '0.2.0', '1.2.0', '2.0.0', '0.3.2', '99.99.99')
      .map((v) => d(`cniVersion unsupported ${v}`, ALL, [1], undefined, (_e, c) => { c['cniVersion'] = v; })),
    fc.constantFrom('0.3.0', '0.3.1').map((v) => d(`CHECK in ${v}`, ['CHECK'], [1], /CHECK/, (_e, c) => { c['cniVersion'] = v; })),
    fc.constantFrom('0.3.1', '0.4.0', '1.0.0').map((v) => d(`GC/STATUS in ${v}`, ['GC', 'STATUS'], [1], /GC|STATUS/, (_e, c) => { c['cniVersion'] = v; })),
    fc.constantFrom(undefined, '').map((v) => d('name missing', ALL, [7], /name/, (_e, c) => { if (v === undefined) delete c['name']; else c['name'] = v; })),
    wrongType('string', true).map((v) => d('name wrong type', ALL, [7], /name/, (_e, c) => { c['name'] = v; })),
    hostileNetworkName.map((v) => d('name hostile', ALL, [7], /name/, (_e, c) => { c['name'] = v; })),
    // --- unknown and misspelt keys: code 2 naming the key
    fc.oneof(fc.constantFrom('isgateway', 'MTU', 'Bridge', 'ipam ', 'hairpin', 'dataDir', 'subnet', 'ipMasq2'), fc.string({ unit: 'binary', maxLength: 30 }).map((s) => `zz${s}`), fc.constant(`k${'x'.repeat(10_240)}`))
      .filter((k) => !KNOWN_TOP.has(k) && !k.startsWith('cni.dev/'))
      .chain((k) => junkValue.map((v) => d('unknown top-level key', ALL, [2], new RegExp(esc(k.slice(0, 50))), (_e, c) => { c[k] = v; }, true))),
    fc.oneof(fc.constantFrom('Subnet', 'range', 'data_dir', 'gw'), fc.string({ maxLength: 10 }).map((s) => `zz${s}`))
      .chain((k) => junkValue.map((v) => d('unknown ipam key', ALL, [2], new RegExp(`ipam\\.${esc(k)}`), (_e, c) => { ipamOf(c)[k] = v; }, true))),
    fc.string({ maxLength: 10 }).map((s) => `zz${s}`)
      .map((k) => d('unknown dns key', ALL, [2], new RegExp(`dns\\.${esc(k)}`), (_e, c) => { c['dns'] = { [k]: 1 }; }, true)),
    fc.constant(d('ipMasq true (refused: node-level masquerade)', ALL, [2], /ipMasq/, (_e, c) => { c['ipMasq'] = true; }, true)),
    // --- known keys with the wrong type or out of range
    fieldType('bridge', 'string', /bridge/),
    fc.oneof(hostileIfname, fc.constant('b'.repeat(10_240))).map((v) => d('bridge hostile', ALL, [7], /bridge/, (_e, c) => { c['bridge'] = v; }, true)),
    fc.oneof(wrongType('number'), fc.constantFrom(0, 67, 65536, 1500.5, -1, 1e308)).map((v) => d('mtu invalid', ALL, [7], /mtu/, (_e, c) => { c['mtu'] = v; }, true)),
    fc.constantFrom('isGateway', 'isDefaultGateway', 'hairpinMode', 'antiSpoofing').chain((k) => fieldType(k, 'boolean', new RegExp(k))),
    wrongType('object', true).map((v) => d('ipam not an object', ALL, [7], /ipam/, (_e, c) => { c['ipam'] = v; }, true)),
    fc.constant(d('ipam missing', ALL, [7], /ipam/, (_e, c) => { delete c['ipam']; }, true)),
    wrongType('array', true).map((v) => d('ipam.ranges not a list', ALL, [7], /ipam\.ranges/, (_e, c) => { ipamOf(c)['ranges'] = v; }, true)),
    fc.oneof(
      fc.constantFrom([], [[]], [{}], [[1]], [[{}]], [[{ subnet: 5 }]], [[{ subnet: '10.99.0.0/24', foo: 1 }]], [[[[[]]]]]),
      fc.array(fc.array(fc.jsonValue({ maxDepth: 3 }), { maxLength: 3 }), { maxLength: 3 }).filter((v) => JSON.stringify(v).indexOf('subnet') < 0),
    ).map((v) => d('ipam.ranges junk', ALL, [7], /ranges/, (_e, c) => { ipamOf(c)['ranges'] = v; }, true)),
    fc.oneof(
      fc.constantFrom('10.99.0.0/33', '10.99.0.1/24', '10.99.0.0/31', '10.99.0.0/32', '300.99.0.0/24', '10.99.0.0', '10.99.0.0/', '/24', 'fd00::/127', 'fd00::1/64', '10.99.0.0/24 ', '10.99.0.0/024', '0x0a.99.0.0/24'),
      hostileString,
    ).map((v) => d(`bad CIDR ${JSON.stringify(v).slice(0, 30)}`, ALL, [7], /subnet|ranges/, (_e, c) => { ipamOf(c)['ranges'] = [[{ subnet: v }]]; }, true)),
    fc.constantFrom(
      [[{ subnet: '10.99.0.0/24', rangeStart: '10.99.1.5' }]],
      [[{ subnet: '10.99.0.0/24', rangeStart: '10.99.0.50', rangeEnd: '10.99.0.10' }]],
      [[{ subnet: '10.99.0.0/24', gateway: 'x' }]],
      [[{ subnet: '10.99.0.0/24' }, { subnet: 'fd00:99::/64' }]],
      [[{ subnet: '10.99.0.0/24' }], [{ subnet: '10.99.0.0/25' }]],
      [[{ subnet: '10.99.0.0/24' }], [{ subnet: '10.99.8.0/24' }]],
    ).map((v) => d('inconsistent ranges', ALL, [7], /ranges|range set|rangeStart|gateway/, (_e, c) => { ipamOf(c)['ranges'] = v; }, true)),
    fc.oneof(hostileDataDir, wrongType('string')).map((v) => d('ipam.dataDir invalid', ALL, [7], /dataDir/, (_e, c) => { ipamOf(c)['dataDir'] = v; }, true)),
    fc.oneof(wrongType('array'), fc.constant({ type: ['x'] })).map((v) => d('ipam.routes junk', ALL, [7], /routes|route/, (_e, c) => { ipamOf(c)['routes'] = v; }, true)),
    fc.constantFrom('../host-local', 'a/b', '$(id)', '', ' x', 'x;y').map((v) => d('ipam.type not a plugin name', ALL, [7], /ipam\.type/, (_e, c) => { c['ipam'] = { type: v }; }, true)),
    wrongType('object', true).map((v) => d('dns not an object', ALL, [7], /dns/, (_e, c) => { c['dns'] = v; }, true)),
    fc.oneof(fc.constant([1]), fc.constant(['not-an-ip']), fc.constant('10.0.0.1')).map((v) => d('dns.nameservers junk', ALL, [7], /dns\.nameservers/, (_e, c) => { c['dns'] = { nameservers: v }; }, true)),
    wrongType('object').filter((v) => v !== null).map((v) => d('runtimeConfig not an object', ALL, [7], /runtimeConfig/, (_e, c) => { c['runtimeConfig'] = v; }, true)),
    fc.oneof(fc.constant([5]), fc.constant(['10.99.0.5/24', 'x']), fc.constant('10.99.0.5'), hostileString.map((s) => [s]).filter((a) => !/^[0-9a-f.:/]+$/i.test(a[0]!)))
      .map((v) => d('runtimeConfig.ips junk', ALL, [7], /runtimeConfig\.ips/, (_e, c) => { c['runtimeConfig'] = { ips: v }; }, true)),
    fc.constantFrom('zz', 5, '02:42:00:00:00', '02-42-00-00-00-01').map((v) => d('runtimeConfig.mac junk', ALL, [7], /runtimeConfig\.mac/, (_e, c) => { c['runtimeConfig'] = { mac: v }; }, true)),
    fc.constantFrom(5, 'x', [1]).map((v) => d('args not an object', ALL, [7], /args/, (_e, c) => { c['args'] = v; }, true)),
    fc.constantFrom(['x'], 5, [[]]).map((v) => d('args.cni.ips junk', ALL, [7], /args\.cni\.ips/, (_e, c) => { c['args'] = { cni: { ips: v } }; }, true)),
    // (null is not junk: "no list" is how libcni says "GC nothing", and GC then does nothing at all.)
    fc.oneof(wrongType('array'), fc.constant([{ containerID: 1, ifname: 'eth0' }]), fc.constant([{}]), fc.constant([null]))
      .filter((v) => v !== null)
      .map((v) => d('cni.dev/valid-attachments junk', ['GC'], [7], /valid-attachments/, (_e, c) => { c['cni.dev/valid-attachments'] = v; }, true)),
  );
}

/** Builds the case for `verb` from a base and defects (the first defect decides the expectation). */
export function buildCase(verb: Verb, base: Base, defects: readonly Defect[]): Case {
  const env: Env = { ...base.env };
  const conf = structuredClone(base.conf);
  let raw: string | undefined;
  for (const def of defects) {
    def.apply(env, conf);
    if (def.raw !== undefined) raw = def.raw;
  }
  const stdin = Buffer.from(raw ?? JSON.stringify(conf), 'utf8');
  const label = `${verb}: ${defects.map((d) => d.label).join(' + ')}`;
  if (defects.length !== 1) return { label, env, stdin };
  const only = defects[0]!;
  // STATUS answers a configuration it cannot use with 50 ("not available") and the reason in details.
  if (verb === 'STATUS' && only.configLevel) return { label, env, stdin, codes: [50], ...(only.mention ? { mention: only.mention } : {}) };
  return { label, env, stdin, codes: only.codes, ...(only.mention ? { mention: only.mention } : {}) };
}

/** A whole case: a verb, a valid base, and 1 (precise) or 1-3 (compound) defects that verb must refuse early. */
export function arbCase(o: BaseOptions, compound: boolean): fc.Arbitrary<Case> {
  // Built once per verb: constructing the catalogue inside chain() for every case costs more than running it.
  const defects = arbDefect();
  const perVerb = VERBS.map((verb) =>
    fc
      .tuple(arbBase(verb, o), fc.array(defects.filter((d) => d.verbs.includes(verb)), { minLength: 1, maxLength: compound ? 3 : 1 }))
      .map(([base, ds]) => buildCase(verb, base, ds)),
  );
  return fc.oneof(...perVerb);
}

// ---- the oracle --------------------------------------------------------------------------------------------

export interface ErrorJson {
  readonly cniVersion: string;
  readonly code: number;
  readonly msg: string;
  readonly details?: string;
}

/**
 * Asserts that an outcome is a proper CNI refusal: exit code 1, stdout exactly one JSON object (optionally
 * followed by one newline, as the executable prints it) with only cniVersion/code/msg/details, an allowed
 * code, no stack trace anywhere in it, and the expected code and mention when the case knows them.
 */
export function assertRefused(c: Pick<Case, 'label' | 'codes' | 'mention' | 'env'>, out: { stdout: string; exitCode: number }): ErrorJson {
  const ctx = `${c.label}\n  env=${JSON.stringify(c.env).slice(0, 400)}\n  stdout=${out.stdout.slice(0, 600)}`;
  assert.equal(out.exitCode, 1, `exit code must be 1: ${ctx}`);
  const text = out.stdout.endsWith('\n') ? out.stdout.slice(0, -1) : out.stdout;
  assert.ok(!text.includes('\n'), `stdout must be a single line: ${ctx}`);
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch {
    assert.fail(`stdout is not JSON: ${ctx}`);
  }
  assert.ok(typeof j === 'object' && j !== null && !Array.isArray(j), `stdout must be a JSON object: ${ctx}`);
  const o = j as Record<string, unknown>;
  assert.equal(JSON.stringify(o), text, `stdout must be exactly one object: ${ctx}`);
  for (const k of Object.keys(o)) assert.ok(['cniVersion', 'code', 'msg', 'details'].includes(k), `unexpected key ${k}: ${ctx}`);
  assert.ok(typeof o['cniVersion'] === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(o['cniVersion']), `cniVersion: ${ctx}`);
  assert.ok(typeof o['code'] === 'number' && Number.isInteger(o['code']), `code must be an integer: ${ctx}`);
  const code = o['code'];
  const statusAllowed = c.env['CNI_COMMAND'] === 'STATUS' && (code === 50 || code === 51);
  assert.ok(ALLOWED_CODES.has(code) || statusAllowed, `code ${code} not allowed: ${ctx}`);
  assert.ok(typeof o['msg'] === 'string' && o['msg'] !== '', `msg must be a non-empty string: ${ctx}`);
  assert.ok(o['details'] === undefined || typeof o['details'] === 'string', `details must be a string: ${ctx}`);
  // A stack frame ("    at fn (file:1:2)") or a Node internal path means an exception leaked through.
  assert.ok(!/\bat [^\s]+ \(|node:internal|\.ts:\d+:\d+|\.js:\d+:\d+/.test(text), `stack trace on stdout: ${ctx}`);
  if (c.codes) assert.ok(c.codes.includes(code), `expected code ${c.codes.join('|')}, got ${code}: ${ctx}`);
  if (c.mention) {
    const where = code === 50 ? `${String(o['msg'])} ${String(o['details'] ?? '')}` : String(o['msg']);
    assert.match(where, c.mention, `message must name the offending variable or field: ${ctx}`);
  }
  return o as unknown as ErrorJson;
}
