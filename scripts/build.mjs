// Bundles each entry point into one CommonJS file (one file loads faster than many ESM modules:
// the plugin pays Node's start-up on every CNI call). Executables get a shebang that drops
// NODE_EXTRA_CA_CERTS, which runtimes pass through and which costs ~40 ms of start-up.
import { build } from 'esbuild';
import { chmodSync, cpSync, mkdirSync, writeFileSync } from 'node:fs';

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
