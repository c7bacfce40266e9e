// The runtime side of CNI as the lab plays it: per-plugin stdin, environment and the result cache,
// following libcni's rules (buildOneConfig, injectRuntimeConfig, Args.AsEnv, cacheAdd).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConflistError,
  buildPluginConfig,
  cacheFilePath,
  cachedConflist,
  delGetsPrevResult,
  kubernetesArgs,
  parseCacheEntry,
  parseConflist,
  pluginEnv,
  renderCacheEntry,
  resultIPs,
} from '../../src/lab/libcni.ts';
import type { RuntimeConf } from '../../src/lab/libcni.ts';

const listText = JSON.stringify({
  cniVersion: '1.1.0',
  name: 'flatnet',
  plugins: [
    { type: 'flatnet', name: 'ignored', cniVersion: '0.3.1', bridge: 'flat0', ipam: { ranges: [[{ subnet: '10.244.1.0/24' }]] } },
    { type: 'portmap', capabilities: { portMappings: true, bandwidth: false }, snat: true },
  ],
});

const rt: RuntimeConf = {
  containerID: 'abc123',
  netns: '/run/netns/fnl-n1-p1',
  ifname: 'eth0',
  args: kubernetesArgs('fnl-n1-p1', 'abc123', 'uid-1'),
  capabilityArgs: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }], bandwidth: { ingressRate: 1 } },
};

describe('lab libcni: per-plugin config', () => {
  const list = parseConflist(listText);

  it('injects the list name and version over the plugin own, no prevResult on the first ADD', () => {
    const c = buildPluginConfig(list, list.plugins[0]!, undefined, rt);
    assert.equal(c['name'], 'flatnet');
    assert.equal(c['cniVersion'], '1.1.0');
    assert.equal('prevResult' in c, false);
    assert.equal('runtimeConfig' in c, false, 'no capabilities declared: no runtimeConfig');
    assert.deepEqual(c['ipam'], { ranges: [[{ subnet: '10.244.1.0/24' }]] });
  });

  it('passes the previous result and only declared (true) capabilities', () => {
    const prev = { cniVersion: '1.1.0', ips: [{ address: '10.244.1.2/24' }] };
    const c = buildPluginConfig(list, list.plugins[1]!, prev, rt);
    assert.deepEqual(c['prevResult'], prev);
    assert.deepEqual(c['runtimeConfig'], { portMappings: rt.capabilityArgs['portMappings'] });
    assert.deepEqual(c['capabilities'], { portMappings: true, bandwidth: false }, 'libcni does not strip capabilities');
  });

  it('omits runtimeConfig when the runtime supplies none of the declared capabilities', () => {
    const c = buildPluginConfig(list, list.plugins[1]!, undefined, { ...rt, capabilityArgs: {} });
    assert.equal('runtimeConfig' in c, false);
  });

  it('refuses conflists libcni refuses', () => {
    assert.throws(() => parseConflist('{"plugins":[{"type":"x"}]}'), /no name/);
    assert.throws(() => parseConflist('{"name":"n","plugins":[]}'), /no plugins in list/);
    assert.throws(() => parseConflist('{"name":"n","plugins":[{"type":"../x"}]}'), /invalid plugin name/);
    assert.throws(() => parseConflist('{"name":"n"}'), ConflistError);
    assert.throws(() => parseConflist('nope'), ConflistError);
  });

  it('sets the six CNI variables on top of the runtime environment', () => {
    const env = pluginEnv({ PATH: '/usr/bin', CNI_COMMAND: 'stale' }, 'ADD', rt, ['/opt/a', '/opt/b']);
    assert.equal(env['PATH'], '/usr/bin');
    assert.equal(env['CNI_COMMAND'], 'ADD');
    assert.equal(env['CNI_CONTAINERID'], 'abc123');
    assert.equal(env['CNI_NETNS'], '/run/netns/fnl-n1-p1');
    assert.equal(env['CNI_IFNAME'], 'eth0');
    assert.equal(env['CNI_PATH'], '/opt/a:/opt/b');
    assert.equal(env['CNI_ARGS'], 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=fnl-n1-p1;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=uid-1');
  });

  it('gives DEL a prevResult from cniVersion 0.4.0 on', () => {
    assert.equal(delGetsPrevResult('0.3.1'), false);
    assert.equal(delGetsPrevResult('0.4.0'), true);
    assert.equal(delGetsPrevResult('1.1.0'), true);
    assert.equal(delGetsPrevResult(''), false);
  });
});

describe('lab libcni: result cache', () => {
  const list = parseConflist(listText);
  const result = { cniVersion: '1.1.0', interfaces: [{ name: 'eth0' }], ips: [{ address: 'fd00::5/64' }, { address: '10.244.1.5/24', interface: 0 }] };

  it('lives at results/<network>-<containerID>-<ifname>', () => {
    assert.equal(cacheFilePath('/var/lib/cni', 'flatnet', 'abc', 'eth0'), '/var/lib/cni/results/flatnet-abc-eth0');
  });

  it('round-trips as a cniCacheV1 record with the conflist bytes in base64', () => {
    const text = renderCacheEntry(list, rt, result);
    const raw = JSON.parse(text) as Record<string, unknown>;
    assert.equal(raw['kind'], 'cniCacheV1');
    assert.equal(raw['containerId'], 'abc123');
    assert.equal(raw['ifName'], 'eth0');
    assert.equal(raw['networkName'], 'flatnet');
    assert.equal(Buffer.from(raw['config'] as string, 'base64').toString('utf8'), listText);
    assert.deepEqual(raw['cniArgs'], rt.args.map((a) => [...a]));
    assert.deepEqual(raw['result'], result);
    const entry = parseCacheEntry(text);
    assert.equal(cachedConflist(entry).bytes, listText);
    assert.throws(() => parseCacheEntry('{"kind":"other"}'), ConflistError);
  });

  it('reports pod addresses IPv4 first, without prefix length', () => {
    assert.deepEqual(resultIPs(result), ['10.244.1.5', 'fd00::5']);
    assert.deepEqual(resultIPs({}), []);
  });
});
