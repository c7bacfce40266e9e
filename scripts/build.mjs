// Bundles each entry point into one CommonJS file (one file loads faster than many ESM modules:
// the plugin pays Node's start-up on every CNI call). Executables get a shebang that drops
// NODE_EXTRA_CA_CERTS, which runtimes pass through and which costs ~40 ms of start-up.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { buildPlugin, SCRIPT_SHEBANG as shebang } from './cni-plugin.mjs';

// The agent is long-running, so its resident set is kept near what it uses (docs/benchmarks.md, "Convergence
// and scale"): small young-generation semi-spaces (V8's default 16 MB ones cost ~50 MB of RSS that a
// reconcile's garbage fills and never returns); an old generation that grows by 25% of the live heap between
// full collections instead of V8's 2-4x (at 5,000 peers ~30 MB of heap instead of ~50; a full collection
// of that heap takes ~10 ms); and two malloc arenas instead of one per thread (~6 MB less that glibc keeps
// after V8's compiler and gRPC free it). None of these slows a reconcile measurably; --optimize-for-size did.
const agentShebang = '#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS MALLOC_ARENA_MAX=2 node --max-semi-space-size=2 --heap-growing-percent=25';
const entries = [
  { in: 'src/bin/flatnet.ts', out: 'dist/bin/flatnet', shebang },
  { in: 'src/bin/flatnetd.ts', out: 'dist/bin/flatnetd', shebang: agentShebang },
];
mkdirSync('dist', { recursive: true });
writeFileSync('dist/package.json', '{"type":"commonjs"}\n');
await Promise.all(
  entries.map(async (e) => {
    await build({
      entryPoints: [e.in],
      outfile: e.out,
      bundle: true,
      platform: 'node',
      target: 'node20',
      format: 'cjs',
      banner: { js: e.shebang },
      sourcemap: false,
      minify: false,
      logLevel: 'warning',
    });
    chmodSync(e.out, 0o755);
  }),
);
// The CNI plugin: one executable file (see scripts/cni-plugin.mjs for its two layouts).
{
  const wanted = process.env.FLATNET_CNI_LAUNCHER;
  const { layout, buildId } = await buildPlugin({ out: 'dist/cni/flatnet', ...(wanted ? { layout: wanted } : {}) });
  if (layout === 'script' && !wanted) console.warn('build: no C compiler for x86-64 Linux here: dist/cni/flatnet uses the slower script launcher');
  console.log(`build: dist/cni/flatnet (${layout} launcher, build ${buildId})`);
}
// etcd3 loads its .proto files at run time from <bundle dir>/../proto.
cpSync('node_modules/etcd3/proto', 'dist/proto', { recursive: true });

// The addon (native/netlink.c, with native/files.c): plain C against Node-API, compiled with gcc directly (no node-gyp,
// so no header download). Node-API's ABI is stable, so one build serves every Node version >= 20. The
// plugin still works without it (through iproute2 and nft), only slower, so a machine without a C
// compiler gets a warning rather than a failed build; a compiler error is a failed build.
{
  const headers = ['node_modules/node-api-headers/include', '/usr/include/node'].find((d) => existsSync(`${d}/node_api.h`));
  const cc = process.env.CC ?? 'gcc';
  const probe = spawnSync(cc, ['--version'], { stdio: 'ignore' });
  if (probe.error || probe.status !== 0 || !headers) {
    console.warn(`build: no ${probe.error || probe.status !== 0 ? cc : 'node_api.h'}: dist/cni/flatnet-netlink.node not built; the plugin will use iproute2 and nft`);
  } else {
    const r = spawnSync(
      cc,
      ['-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', '-DNODE_GYP_MODULE_NAME=flatnet_netlink', `-I${headers}`, 'native/netlink.c', 'native/files.c', '-o', 'dist/cni/.flatnet-netlink.node.tmp'],
      { stdio: 'inherit' },
    );
    if (r.status !== 0) {
      console.error('build: compiling the addon (native/*.c) failed');
      process.exit(1);
    }
    renameSync('dist/cni/.flatnet-netlink.node.tmp', 'dist/cni/flatnet-netlink.node'); // never half-written to a running plugin
  }
}
