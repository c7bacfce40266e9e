// Bundles each entry point into one CommonJS file (one file loads faster than many ESM modules:
// the plugin pays Node's start-up on every CNI call). Executables get a shebang that drops
// NODE_EXTRA_CA_CERTS, which runtimes pass through and which costs ~40 ms of start-up.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';

const shebang = '#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS node';
// The agent is long-running: small young-generation semi-spaces keep its resident set near what it uses
// (V8's default 16 MB semi-spaces cost ~50 MB of RSS that a reconcile's garbage fills and never returns).
const agentShebang = `${shebang} --max-semi-space-size=2`;
const entries = [
  { in: 'src/bin/flatnet-cni.ts', out: 'dist/cni/flatnet', shebang },
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
// etcd3 loads its .proto files at run time from <bundle dir>/../proto.
cpSync('node_modules/etcd3/proto', 'dist/proto', { recursive: true });

// The netlink addon (native/netlink.c): plain C against Node-API, compiled with gcc directly (no node-gyp,
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
      ['-O2', '-Wall', '-Wextra', '-Werror', '-shared', '-fPIC', '-DNODE_GYP_MODULE_NAME=flatnet_netlink', `-I${headers}`, 'native/netlink.c', '-o', 'dist/cni/flatnet-netlink.node'],
      { stdio: 'inherit' },
    );
    if (r.status !== 0) {
      console.error('build: compiling native/netlink.c failed');
      process.exit(1);
    }
  }
}
