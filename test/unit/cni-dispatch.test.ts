// The protocol edge without root: env + stdin in, stdout + exit code out, against recording handlers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type Handlers, type Request, dispatch } from '../../src/cni/dispatch.ts';
import { parseCniArgs } from '../../src/cni/args.ts';
import { SUPPORTED_VERSIONS } from '../../src/cni/version.ts';

function recorder(): { handlers: Handlers; calls: Request[] } {
  const calls: Request[] = [];
  const handlers: Handlers = {
    add: (r) => (calls.push(r), Promise.resolve({ cniVersion: r.cniVersion })),
    del: (r) => (calls.push(r), Promise.resolve()),
    check: (r) => (calls.push(r), Promise.resolve()),
    status: (r) => (calls.push(r), Promise.resolve()),
    gc: (r) => (calls.push(r), Promise.resolve()),
  };
  return { handlers, calls };
}

const baseEnv = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'abc123', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' };
const conf = (o: Record<string, unknown> = {}) => Buffer.from(JSON.stringify({ cniVersion: '1.1.0', name: 'net1', type: 'flatnet', ...o }));

async function errorOf(env: Record<string, string>, stdin: Buffer | string) {
  const { handlers, calls } = recorder();
  const out = await dispatch(env, () => (typeof stdin === 'string' ? Buffer.from(stdin) : stdin), handlers);
  assert.equal(out.exitCode, 1, `expected failure, got ${out.stdout}`);
  assert.equal(calls.length, 0, 'no verb may run on bad input');
  return JSON.parse(out.stdout) as { code: number; msg: string; details?: string; cniVersion: string };
}

test('VERSION lists every supported version and needs no config', async () => {
  const { handlers } = recorder();
  const out = await dispatch({ CNI_COMMAND: 'VERSION' }, () => Buffer.from('{"cniVersion":"1.0.0"}'), handlers);
  assert.equal(out.exitCode, 0);
  assert.deepEqual(JSON.parse(out.stdout), { cniVersion: '1.0.0', supportedVersions: [...SUPPORTED_VERSIONS] });
});

test('missing and invalid environment variables: code 4 naming them', async () => {
  let e = await errorOf({}, conf());
  assert.equal(e.code, 4);
  assert.match(e.msg, /CNI_COMMAND/);
  e = await errorOf({ ...baseEnv, CNI_NETNS: '', CNI_IFNAME: '' }, conf());
  assert.equal(e.code, 4);
  assert.match(e.msg, /\[CNI_NETNS,CNI_IFNAME\]/);
  e = await errorOf({ ...baseEnv, CNI_COMMAND: 'FROB' }, conf());
  assert.match(e.msg, /unknown CNI_COMMAND: FROB/);
  e = await errorOf({ ...baseEnv, CNI_IFNAME: 'a-very-long-ifname0' }, conf());
  assert.equal(e.code, 4);
  assert.match(e.msg, /CNI_IFNAME: interface name is too long/);
  for (const bad of ['../x', 'eth0:1', 'et h0', '.', '..', 'eth\u00000']) {
    e = await errorOf({ ...baseEnv, CNI_IFNAME: bad }, conf());
    assert.equal(e.code, 4, bad);
    assert.match(e.msg, /CNI_IFNAME/);
  }
  for (const bad of ['abc;rm -rf /', '-abc', 'a/b', '$(id)', 'x'.repeat(2000)]) {
    e = await errorOf({ ...baseEnv, CNI_CONTAINERID: bad }, conf());
    assert.equal(e.code, 4, bad);
    assert.match(e.msg, /CNI_CONTAINERID/);
  }
  e = await errorOf({ ...baseEnv, CNI_NETNS: 'relative/path' }, conf());
  assert.match(e.msg, /CNI_NETNS/);
  e = await errorOf({ ...baseEnv, CNI_NETNS: '/run/netns/../../etc' }, conf());
  assert.match(e.msg, /CNI_NETNS/);
});

test('DEL accepts an empty CNI_NETNS (containerd second DEL)', async () => {
  const { handlers, calls } = recorder();
  const out = await dispatch({ ...baseEnv, CNI_COMMAND: 'DEL', CNI_NETNS: '' }, () => conf(), handlers);
  assert.equal(out.exitCode, 0);
  assert.equal(calls[0]?.netns, '');
});

test('undecodable config: code 6; missing or bad name: code 7; stdin error: code 5', async () => {
  assert.equal((await errorOf(baseEnv, '{not json')).code, 6);
  assert.equal((await errorOf(baseEnv, '[1,2]')).code, 6);
  const noName = await errorOf(baseEnv, '{"cniVersion":"1.1.0"}');
  assert.equal(noName.code, 7);
  assert.match(noName.msg, /name/);
  assert.equal((await errorOf(baseEnv, conf({ name: 'bad name!' }))).code, 7);
  const { handlers } = recorder();
  const out = await dispatch(baseEnv, () => {
    throw new Error('EIO');
  }, handlers);
  assert.equal((JSON.parse(out.stdout) as { code: number }).code, 5);
});

test('version gates: unknown version, CHECK before 0.4.0, STATUS/GC before 1.1.0 are code 1', async () => {
  let e = await errorOf(baseEnv, conf({ cniVersion: '0.9.9' }));
  assert.equal(e.code, 1);
  assert.match(e.details ?? '', /0\.9\.9/);
  e = await errorOf(baseEnv, conf({ cniVersion: '1.1' }));
  assert.equal(e.code, 6, '"1.1" is not a version string');
  e = await errorOf({ ...baseEnv, CNI_COMMAND: 'CHECK' }, conf({ cniVersion: '0.3.1' }));
  assert.equal(e.code, 1);
  assert.match(e.msg, /CHECK/);
  e = await errorOf({ CNI_COMMAND: 'STATUS', CNI_PATH: '/x' }, conf({ cniVersion: '1.0.0' }));
  assert.equal(e.code, 1);
  e = await errorOf({ CNI_COMMAND: 'GC', CNI_PATH: '/x' }, conf({ cniVersion: '1.0.0' }));
  assert.equal(e.code, 1);
  e = await errorOf(baseEnv, conf({ cniVersion: '0.2.0' }));
  assert.equal(e.code, 1, '0.1.0/0.2.0 are not supported');
});

test('errors are answered in the config version; unexpected exceptions become 999', async () => {
  const handlers: Handlers = { ...recorder().handlers, add: () => Promise.reject(new TypeError('boom')) };
  const out = await dispatch(baseEnv, () => conf({ cniVersion: '0.4.0' }), handlers);
  assert.deepEqual(JSON.parse(out.stdout), { cniVersion: '0.4.0', code: 999, msg: 'boom' });
});

test('CNI_ARGS: pairs, IgnoreUnknown, IP= and MAC=', () => {
  assert.deepEqual(parseCniArgs(''), { ips: [] });
  assert.deepEqual(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=web;FOO=bar;IP=10.99.0.9,fd00:99::9'), { ips: ['10.99.0.9', 'fd00:99::9'], podName: 'web' });
  assert.throws(() => parseCniArgs('FOO=bar'), /unknown args "FOO"/);
  assert.throws(() => parseCniArgs('IP'), /invalid pair/);
  assert.throws(() => parseCniArgs('A=b=c'), /invalid pair/);
  assert.equal(parseCniArgs('MAC=02:00:00:00:00:01').mac, '02:00:00:00:00:01');
});
