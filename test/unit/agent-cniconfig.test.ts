import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CniConfigError, ensureConflistFile, renderConflist } from '../../src/agent/cniconfig.ts';

const base = {
  name: 'flatnet',
  mtu: 1450,
  podCIDRs: ['fd00:99:0:1::/64', '10.99.1.0/24'],
  clusterCIDRs: ['10.99.0.0/16', 'fd00:99::/48'],
  portmap: true,
};

test('renders the conflist for flatnet-cni, IPv4 range first, portmap chained', () => {
  const conf = JSON.parse(renderConflist(base)) as unknown;
  assert.deepEqual(conf, {
    cniVersion: '1.0.0',
    cniVersions: ['1.0.0', '1.1.0'],
    name: 'flatnet',
    plugins: [
      {
        type: 'flatnet',
        bridge: 'flat0',
        mtu: 1450,
        isGateway: true,
        isDefaultGateway: true,
        hairpinMode: true,
        ipam: {
          ranges: [[{ subnet: '10.99.1.0/24' }], [{ subnet: 'fd00:99:0:1::/64' }]],
          routes: [{ dst: '10.99.0.0/16' }, { dst: 'fd00:99::/48' }],
        },
      },
      { type: 'portmap', capabilities: { portMappings: true }, snat: true },
    ],
  });
  const noPortmap = JSON.parse(renderConflist({ ...base, portmap: false })) as { plugins: unknown[] };
  assert.equal(noPortmap.plugins.length, 1);
  assert.throws(() => renderConflist({ ...base, podCIDRs: ['10.99.1.1/24'] }), CniConfigError);
  assert.throws(() => renderConflist({ ...base, mtu: 0 }), CniConfigError);
});

test('writes atomically with mode 0644, and only when the content changed', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fnt-cniconf-'));
  try {
    const path = join(dir, '10-flatnet.conflist');
    const text = renderConflist(base);
    assert.equal(await ensureConflistFile(path, text), true);
    assert.equal(await readFile(path, 'utf8'), text);
    assert.equal((await stat(path)).mode & 0o777, 0o644);
    const before = (await stat(path)).mtimeMs;
    assert.equal(await ensureConflistFile(path, text), false);
    assert.equal((await stat(path)).mtimeMs, before);
    const changed = renderConflist({ ...base, mtu: 1400 });
    assert.equal(await ensureConflistFile(path, changed), true);
    assert.equal(await readFile(path, 'utf8'), changed);
    assert.deepEqual(await readdir(dir), ['10-flatnet.conflist'], 'no temp file left behind');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
