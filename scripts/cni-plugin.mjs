// Packages the CNI plugin (src/bin/flatnet-cni.ts) as one executable file, because runtimes exec
// `<CNI_PATH>/<type>` and operators copy that one file (plus the optional netlink addon). Used by
// build.mjs for dist/cni/flatnet, and by a root test that builds and runs both layouts.
//
// Two layouts, the same JavaScript:
// - native (x86-64 Linux with a C compiler; the default there): native/launcher.c, a static program
//   without libc, followed in the same file by the bundle's source and a 10-digit trailer giving the
//   offset where the bundle starts. The program drops NODE_EXTRA_CA_CERTS and runs
//   `node -e LOADER <itself> <a descriptor of itself>`; LOADER reads the bundle back through the
//   descriptor. This saves the `env` exec of the script layout and Node's resolution of a main module
//   (figures in docs/benchmarks.md).
// - script (other machines, no C compiler, or FLATNET_CNI_LAUNCHER=script): a
//   `#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node` script that carries the bundle as the text of a
//   comment inside a function and takes it back with Function.prototype.toString (V8 keeps a function's
//   exact source). As a string literal, V8 had to decode ~100 KB of escapes on every call (~2.7 ms of
//   CPU); a comment is only scanned for its end (~1.4 ms). The bundle's own `*` + `/` pairs are written
//   as `*@@/` and put back.
//
// Either way the bundle is compiled through vm.Script so that V8's code cache can be used: after its first
// successful ADD the plugin saves the compiled code of what it ran beside itself (.flatnet-<build>.add.cache,
// then .full.cache after the first DEL; see src/plugin/code-cache.ts), and later calls skip compiling those
// functions. The build id is a hash of the bundle, so a cache is never applied to other code; V8 itself
// rejects a cache from another Node version or other flags, and then the plugin compiles normally and saves
// a fresh one. Both loaders first load the netlink addon beside the plugin, when there is one, and read
// the cache (and, in the native layout, the bundle) through it without copies (LOAD_ADDON below).
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Drops NODE_EXTRA_CA_CERTS, which runtimes pass through and which costs ~40 ms of Node's start-up. */
export const SCRIPT_SHEBANG = '#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node';

/** The layout this machine gets by default: native where launcher.c can be built (x86-64 Linux with a compiler). */
export function defaultLayout() {
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'script';
  const probe = spawnSync(process.env.CC ?? 'gcc', ['--version'], { stdio: 'ignore' });
  return probe.error || probe.status !== 0 ? 'script' : 'native';
}

/**
 * Writes the plugin to `out` (replacing it by rename, so a runtime exec'ing it mid-build sees the old file
 * or the new one, whole) and removes other builds' code caches beside it.
 * @param {{ out: string, layout?: string }} o
 * @returns {Promise<{ layout: 'native' | 'script', buildId: string }>}
 */
export async function buildPlugin(o) {
  const layout = o.layout ?? defaultLayout();
  if (layout !== 'native' && layout !== 'script') throw new Error(`build: the plugin's layout must be native or script, not ${layout}`);
  const bundled = await build({
    entryPoints: [join(ROOT, 'src/bin/flatnet-cni.ts')],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    charset: 'ascii',
    write: false,
    logLevel: 'warning',
  });
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${bundled.outputFiles[0].text}\n})`;
  // ASCII, so the native loader may decode it as latin1 (a plain copy) and its offsets are byte offsets.
  if (!/^[\x00-\x7f]*$/.test(wrapped)) throw new Error('build: the plugin bundle is not ASCII');
  const buildId = createHash('sha256').update(wrapped).digest('hex').slice(0, 16);
  const plugin = layout === 'native' ? nativeLayout(wrapped, buildId) : scriptLayout(wrapped, buildId);

  const dir = dirname(o.out);
  mkdirSync(dir, { recursive: true });
  for (const f of readdirSync(dir)) if (/^\.flatnet-[0-9a-f]{16}\.(add|full)\.cache$/.test(f)) rmSync(join(dir, f)); // other builds' code
  const tmp = join(dir, `.${basename(o.out)}.tmp`);
  writeFileSync(tmp, plugin, { mode: 0o755 });
  renameSync(tmp, o.out);
  return { layout, buildId };
}

// The loaders below are written as lists of lines; comments about them stay out here, in the build
// script. compact() drops each line's indentation: the native loader travels as Node's `-e` argument,
// and past about 1.65 KB of it every call took 28 more page faults (~0.4 ms here; measured by padding the
// loader with a comment: 1,660 bytes no, 1,700 bytes yes, for reasons inside Node or V8 not found).
// The build refuses a native loader longer than NATIVE_LOADER_MAX, to keep it below that.
const NATIVE_LOADER_MAX = 1600;
const compact = (lines) => lines.map((l) => l.trim()).filter((l) => l !== '').join('\n');

// The first thing both layouts do once they know their own file (FILE): load the netlink addon beside it
// (ADDON, or undefined). Here rather than in the bundle, because it also hands the loader the code cache
// and the bundle without the copies a plain read makes (native/netlink.c: mapFile, readBundle); the
// bundle is given the same instance for netlink (adoptNetlink). An addon that is absent, or older than
// these functions, only means the plain reads.
const LOAD_ADDON = [
  "const DIR = FILE.slice(0, FILE.lastIndexOf('/'));",
  'let ADDON;',
  'try {',
  '  const m = { exports: {} };',
  '  process.dlopen(m, `${DIR}/flatnet-netlink.node`);',
  '  ADDON = m.exports;',
  '} catch {}',
];

// What both layouts run once they have the addon (ADDON) and the bundle's source (BODY).
// - Two cache files: what an ADD ran, then (after the first DEL) what ADD and DEL ran.
// - A cache file is only ever replaced by rename, so mapping it is safe (native/netlink.c). mapFile failing
//   for another reason than a missing file (V8's sandbox refusing outside memory) falls back to a read.
// - A cache V8 rejects (another Node, or damaged) is removed, so that the next call saves a good one.
function runBundle(buildId) {
  return [
    `const base = \`\${DIR}/.flatnet-${buildId}\`;`,
    'let have = "none";',
    'let cachedData;',
    'const readCache = (path) => {',
    '  if (typeof ADDON?.mapFile === "function") {',
    '    try {',
    '      return ADDON.mapFile(path);',
    '    } catch (e) {',
    '      if (e?.code === "ENOENT") throw e;',
    '    }',
    '  }',
    '  return readFileSync(path);',
    '};',
    'for (const kind of ["full", "add"]) {',
    '  try {',
    '    cachedData = readCache(`${base}.${kind}.cache`);',
    '    have = kind;',
    '    break;',
    '  } catch {}',
    '}',
    'const script = new Script(BODY, { filename: FILE, ...(cachedData ? { cachedData } : {}) });',
    'if (script.cachedDataRejected === true) {',
    '  rmSync(`${base}.${have}.cache`, { force: true });',
    '  have = "none";',
    '}',
    'const mod = { exports: {} };',
    'script.runInThisContext()(mod.exports, require, mod, FILE, DIR);',
    'void mod.exports.main({ base, have, create: () => script.createCachedData() }, ADDON);',
  ];
}

/**
 * The native layout's loader: native/launcher.c runs it as `node -e LOADER <plugin file> <fd>`, where fd
 * is the launcher's descriptor of the file it was exec'd from (empty without /proc), so that the bundle
 * read is the one that was exec'd even if the file has been replaced since.
 */
function nativeLoader(buildId) {
  return compact([
    "'use strict';",
    "const { closeSync, readFileSync, rmSync } = require('node:fs');",
    "const { Script } = require('node:vm');",
    'const FILE = process.argv[1];',
    'const fd = process.argv[2] ? Number(process.argv[2]) : undefined;',
    ...LOAD_ADDON,
    'const readPlain = () => {',
    '  const bytes = readFileSync(fd ?? FILE);',
    '  const end = bytes.length - 10;',
    "  return bytes.toString('latin1', Number(bytes.toString('latin1', end)), end);",
    '};',
    'const BODY = fd !== undefined && typeof ADDON?.readBundle === "function" ? ADDON.readBundle(fd) : readPlain();',
    'if (fd !== undefined) closeSync(fd);',
    ...runBundle(buildId),
  ]);
}

function nativeLayout(wrapped, buildId) {
  const loader = nativeLoader(buildId);
  if (loader.length > NATIVE_LOADER_MAX) {
    throw new Error(`build: the native loader is ${loader.length} bytes, more than ${NATIVE_LOADER_MAX}: every plugin call would pay ~28 page faults more (see scripts/cni-plugin.mjs)`);
  }
  const elf = compileLauncher(loader, buildId);
  return Buffer.concat([elf, Buffer.from(wrapped, 'latin1'), Buffer.from(String(elf.length).padStart(10, '0'))]);
}

function scriptLayout(wrapped, buildId) {
  const CLOSE_ESCAPE = '*@@/';
  if (wrapped.includes(CLOSE_ESCAPE)) throw new Error(`build: the plugin bundle contains ${CLOSE_ESCAPE}, which the launcher uses as an escape`);
  return [
    SCRIPT_SHEBANG,
    "'use strict';",
    '// flatnet-cni, generated by scripts/cni-plugin.mjs from src/bin/flatnet-cni.ts (see there for why).',
    `function bundle() {/*${wrapped.replaceAll('*/', CLOSE_ESCAPE)}*/}`,
    'const carrier = bundle.toString();',
    `const BODY = carrier.slice(carrier.indexOf('/*') + 2, carrier.lastIndexOf('*/')).replaceAll(${JSON.stringify(CLOSE_ESCAPE)}, '*/');`,
    "const { readFileSync, rmSync } = require('node:fs');",
    "const { Script } = require('node:vm');",
    'const FILE = __filename;',
    compact([...LOAD_ADDON, ...runBundle(buildId)]),
    '',
  ].join('\n');
}

/**
 * native/launcher.c with `loader` and the build id built in (the id tells flatnetd which bundle the caller
 * is: src/agent/cni-server.ts), as the bytes of a static executable. A failure fails the build.
 */
function compileLauncher(loader, buildId) {
  const cc = process.env.CC ?? 'gcc';
  const tmp = mkdtempSync(join(tmpdir(), 'flatnet-launcher-'));
  try {
    // The loader as C array initialisers, NUL-terminated: no C string escaping to get wrong.
    writeFileSync(join(tmp, 'loader.inc'), `${[...Buffer.from(`${loader}\0`, 'latin1')].join(',')}\n`);
    const r = spawnSync(
      cc,
      [
        ...['-Os', '-static', '-nostdlib', '-ffreestanding', '-fno-pie', '-no-pie', '-fno-stack-protector'],
        // No memcpy/memset calls conjured from loops: there is no libc to provide them.
        ...['-fno-tree-loop-distribute-patterns', '-fno-asynchronous-unwind-tables', '-Wl,--build-id=none', '-s'],
        ...['-Wall', '-Wextra', '-Werror', `-DLOADER_FILE="${join(tmp, 'loader.inc')}"`, `-DBUILD_ID="${buildId}"`],
        ...[join(ROOT, 'native/launcher.c'), '-o', join(tmp, 'launcher')],
      ],
      { stdio: 'inherit' },
    );
    if (r.error || r.status !== 0) {
      throw new Error(`build: compiling native/launcher.c with ${cc} failed (FLATNET_CNI_LAUNCHER=script writes the script layout instead)`);
    }
    return readFileSync(join(tmp, 'launcher'));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// As a command: `node scripts/cni-plugin.mjs OUT [native|script]` (the launcher test builds both layouts).
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [out, layout] = process.argv.slice(2);
  if (!out) {
    console.error('usage: node scripts/cni-plugin.mjs OUT [native|script]');
    process.exit(2);
  }
  const r = await buildPlugin({ out, ...(layout ? { layout } : {}) });
  console.log(`${out}: ${r.layout} launcher, build ${r.buildId}`);
}
