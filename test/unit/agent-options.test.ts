import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OptionsError, parseAgentOptions, parseListen } from '../../src/agent/options.ts';
import { txChecksumOffloadWanted } from '../../src/agent/mtu.ts';

test('defaults: host-gw, embedded store, loopback listener, 10.244.0.0/16 in /24s', () => {
  const o = parseAgentOptions([], 'Node-A');
  assert.equal(o.node, 'node-a');
  assert.equal(o.backend, 'host-gw');
  assert.deepEqual(o.store, { kind: 'embedded', dir: '/var/lib/flatnet/store' });
  assert.equal(o.listen, '127.0.0.1:9642');
  assert.deepEqual(o.clusterCIDRs, ['10.244.0.0/16']);
  assert.equal(o.nodePrefix[4], 24);
  assert.ok(o.reuseGraceMs >= 2 * o.resyncMs, 'a dead node’s subnet waits at least two resyncs');
});

test('bad flags are refused naming the flag', () => {
  const bad: [string[], RegExp][] = [
    [['--backend', 'wireguard'], /--backend/],
    [['--cluster-cidr', '10.244.0.1/16'], /--cluster-cidr/],
    [['--cluster-cidr', '10.0.0.0/8', '--cluster-cidr', '10.1.0.0/16'], /one CIDR per address family/],
    [['--node-prefix-v4', '8', '--cluster-cidr', '10.244.0.0/16'], /do not fit/],
    [['--store', 'etcd'], /--etcd-endpoints/],
    [['--store', 'etcd', '--etcd-endpoints', 'ftp://x'], /--etcd-endpoints/],
    [['--listen', '0.0.0.0'], /--listen/],
    [['--node', 'Bad_Name!'], /--node/],
    [['--store-dir', 'relative'], /--store-dir/],
    [['--vxlan-tx-csum', 'maybe'], /--vxlan-tx-csum/],
    [['--frobnicate'], /frobnicate/],
    [['--store', 'kubernetes'], /--kube-api, or KUBERNETES_SERVICE_HOST/],
    [['--store', 'kubernetes', '--kube-api', 'ftp://api'], /--kube-api/],
    [['--store', 'kubernetes', '--kube-api', 'https://user:pw@api:6443'], /without query, fragment or credentials/],
    [['--store', 'kubernetes', '--kube-api', 'https://api:6443', '--kube-token-file', 'token'], /--kube-token-file/],
    [['--store', 'zookeeper'], /embedded, etcd or kubernetes/],
    [['--store', 'etcd', '--etcd-endpoints', 'https://a:2379,http://b:2379'], /all http or all https/],
    [['--store', 'etcd', '--etcd-endpoints', 'http://a:2379', '--etcd-cafile', '/etc/ca.crt'], /--etcd-cafile needs https/],
    [['--store', 'etcd', '--etcd-endpoints', 'https://a:2379', '--etcd-certfile', '/etc/c.crt'], /--etcd-certfile and --etcd-keyfile go together/],
    [['--store', 'etcd', '--etcd-endpoints', 'https://a:2379', '--etcd-keyfile', '/etc/c.key'], /--etcd-certfile and --etcd-keyfile go together/],
    [['--store', 'etcd', '--etcd-endpoints', 'https://a:2379', '--etcd-cafile', 'ca.crt'], /--etcd-cafile must be an absolute path/],
    [['--store', 'etcd', '--etcd-endpoints', 'http://a:2379', '--etcd-username', 'flatnet'], /--etcd-username and --etcd-password-file go together/],
    [['--store', 'etcd', '--etcd-endpoints', 'http://a:2379', '--etcd-username', 'two words', '--etcd-password-file', '/p'], /--etcd-username "two words"/],
    [['--store', 'etcd', '--etcd-endpoints', 'http://a:2379', '--etcd-username', 'u', '--etcd-password-file', 'p'], /--etcd-password-file must be an absolute path/],
  ];
  for (const [argv, re] of bad) assert.throws(() => parseAgentOptions(argv, 'n1'), (e: unknown) => e instanceof OptionsError && re.test(e.message), argv.join(' '));
});

test('store kubernetes: in-cluster from the pod environment, or an explicit API server', () => {
  const inCluster = parseAgentOptions(['--store', 'kubernetes'], 'n1', { KUBERNETES_SERVICE_HOST: 'fd00:96::1', KUBERNETES_SERVICE_PORT: '443' });
  assert.deepEqual(inCluster.store, {
    kind: 'kubernetes',
    server: 'https://[fd00:96::1]:443',
    tokenFile: '/var/run/secrets/kubernetes.io/serviceaccount/token',
    caFile: '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt',
  });
  const explicit = parseAgentOptions(['--store', 'kubernetes', '--kube-api', 'http://10.99.0.1:8080', '--kube-token-file', '/etc/flatnet/token'], 'n1', { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' });
  assert.deepEqual(explicit.store, { kind: 'kubernetes', server: 'http://10.99.0.1:8080', tokenFile: '/etc/flatnet/token' });
});

test('store etcd: TLS files for https endpoints, and user auth with the password in a file', () => {
  assert.deepEqual(parseAgentOptions(['--store', 'etcd', '--etcd-endpoints', 'http://a:2379,http://b:2379'], 'n1').store, {
    kind: 'etcd',
    endpoints: ['http://a:2379', 'http://b:2379'],
    cluster: 'default',
  });
  const tls = ['--etcd-cafile', '/etc/etcd/ca.crt', '--etcd-certfile', '/etc/etcd/flatnet.crt', '--etcd-keyfile', '/etc/etcd/flatnet.key'];
  const auth = ['--etcd-username', 'flatnet', '--etcd-password-file', '/etc/flatnet/etcd-password'];
  assert.deepEqual(parseAgentOptions(['--store', 'etcd', '--etcd-endpoints', 'https://a:2379', ...tls, ...auth, '--cluster-name', 'prod'], 'n1').store, {
    kind: 'etcd',
    endpoints: ['https://a:2379'],
    cluster: 'prod',
    tls: { caFile: '/etc/etcd/ca.crt', certFile: '/etc/etcd/flatnet.crt', keyFile: '/etc/etcd/flatnet.key' },
    auth: { username: 'flatnet', passwordFile: '/etc/flatnet/etcd-password' },
  });
  // https with nothing else: the system's CAs, no client certificate.
  assert.deepEqual(parseAgentOptions(['--store', 'etcd', '--etcd-endpoints', 'https://a:2379'], 'n1').store, { kind: 'etcd', endpoints: ['https://a:2379'], cluster: 'default' });
});

test('listen addresses: TCP v4/v6 and unix sockets', () => {
  assert.deepEqual(parseListen('127.0.0.1:9642'), { kind: 'tcp', host: '127.0.0.1', port: 9642 });
  assert.deepEqual(parseListen('[::1]:9642'), { kind: 'tcp', host: '::1', port: 9642 });
  assert.deepEqual(parseListen('unix:/run/flatnet/agent.sock'), { kind: 'unix', path: '/run/flatnet/agent.sock' });
});

test('VXLAN tx checksum offload: auto keeps it only on kernels with the SNAT checksum fix (5.7+)', () => {
  assert.equal(txChecksumOffloadWanted('auto', '6.18.0-flatnet'), true);
  assert.equal(txChecksumOffloadWanted('auto', '5.7.0'), true);
  assert.equal(txChecksumOffloadWanted('auto', '5.4.0-150-generic'), false);
  assert.equal(txChecksumOffloadWanted('auto', '4.19.0'), false);
  assert.equal(txChecksumOffloadWanted('auto', 'weird'), false);
  assert.equal(txChecksumOffloadWanted('off', '6.18.0'), false);
  assert.equal(txChecksumOffloadWanted('on', '4.19.0'), true);
});
