import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ActualState, DesiredRoute, DesiredState, KernelRoute } from '../../src/agent/desired.ts';
import { countPlan, planSync, renderBatches } from '../../src/agent/reconcile.ts';
import type { Plan } from '../../src/agent/reconcile.ts';
import { batchFailures } from '../../src/linux/datapath-state.ts';
import { CommandError, runLines } from '../../src/linux/run.ts';
import { parseFdb, parseNeighbours, parseRouteLine } from '../../src/linux/iproute-json.ts';

const EMPTY_DESIRED: DesiredState = { routes: [], neighbours: [], fdb: [], unreachable: [] };
const EMPTY_ACTUAL: ActualState = { routes: [], neighbours: [], fdb: [] };

const hg = (n: number, gw = `172.29.0.${n}`): DesiredRoute => ({
  family: 4, dst: `10.99.${n}.0/24`, gateway: gw, dev: 'eth0', onlink: false, node: `n${n}`,
});
const kr = (n: number, over: Partial<KernelRoute> = {}): KernelRoute => ({
  family: 4, dst: `10.99.${n}.0/24`, gateway: `172.29.0.${n}`, dev: 'eth0', onlink: false, protocol: '241', ...over,
});

/** The plan as the text the kernel would get, one line per step, batches separated by "--". */
function text(plan: Plan): string[] {
  return renderBatches(plan).flatMap((b, i) => [...(i > 0 ? ['--'] : []), ...b.lines.map((l) => `${b.tool} ${l}`)]);
}

const routeCases: Array<{ name: string; desired: DesiredRoute[]; actual: KernelRoute[]; want: string[]; conflicts?: number }> = [
  { name: 'nothing to do', desired: [], actual: [], want: [] },
  { name: 'add missing', desired: [hg(2)], actual: [], want: ['ip route replace 10.99.2.0/24 via 172.29.0.2 dev eth0 proto 241'] },
  { name: 'in sync', desired: [hg(2), hg(3)], actual: [kr(2), kr(3)], want: [] },
  {
    name: 'gateway changed: replaced in place, no delete',
    desired: [hg(2, '172.29.0.9')], actual: [kr(2)],
    want: ['ip route replace 10.99.2.0/24 via 172.29.0.9 dev eth0 proto 241'],
  },
  {
    name: 'departed node (even if we were down when it left) is deleted by its label',
    desired: [hg(2)], actual: [kr(2), kr(3)],
    want: ['ip route del 10.99.3.0/24 via 172.29.0.3 dev eth0 proto 241'],
  },
  {
    name: 'routes of other protocols are never touched, even stale-looking ones',
    desired: [hg(2)], actual: [kr(2), kr(7, { protocol: 'static' }), { family: 4, dst: '10.99.8.0/24', dev: 'flat0', onlink: false, protocol: 'kernel' }],
    want: [],
  },
  {
    name: 'a foreign route holding a desired prefix wins: conflict reported, no replace',
    desired: [hg(2), hg(3)], actual: [kr(3, { protocol: 'static', gateway: '172.29.0.99' })],
    want: ['ip route replace 10.99.2.0/24 via 172.29.0.2 dev eth0 proto 241'], conflicts: 1,
  },
  {
    name: 'an extra copy of ours at another metric is removed',
    desired: [hg(2)], actual: [kr(2), kr(2, { metric: 50 })],
    want: ['ip route del 10.99.2.0/24 via 172.29.0.2 dev eth0 proto 241 metric 50'],
  },
  {
    name: 'IPv6 default metric 1024 counts as the route we install',
    desired: [{ family: 6, dst: 'fd00:99:0:2::/64', gateway: 'fd00:29::2', dev: 'eth0', onlink: false, node: 'n2' }],
    actual: [{ family: 6, dst: 'fd00:99:0:2::/64', gateway: 'fd00:29::2', dev: 'eth0', onlink: false, protocol: '241', metric: 1024 }],
    want: [],
  },
  {
    name: 'IPv6 route moving to another device (backend switch) is deleted before the replace',
    desired: [{ family: 6, dst: 'fd00:99:0:2::/64', gateway: 'fd00:99:0:2::', dev: 'flat.vx', onlink: true, node: 'n2' }],
    actual: [{ family: 6, dst: 'fd00:99:0:2::/64', gateway: 'fd00:29::2', dev: 'eth0', onlink: false, protocol: '241', metric: 1024 }],
    want: [
      'ip route del fd00:99:0:2::/64 via fd00:29::2 dev eth0 proto 241 metric 1024',
      'ip route replace fd00:99:0:2::/64 via fd00:99:0:2:: dev flat.vx onlink proto 241',
    ],
  },
  {
    name: 'deletes and adds in one process for routes only (host-gw)',
    desired: [hg(2)], actual: [kr(3)],
    want: ['ip route del 10.99.3.0/24 via 172.29.0.3 dev eth0 proto 241', 'ip route replace 10.99.2.0/24 via 172.29.0.2 dev eth0 proto 241'],
  },
];

for (const c of routeCases) {
  test(`routes: ${c.name}`, () => {
    const plan = planSync({ ...EMPTY_DESIRED, routes: c.desired }, { ...EMPTY_ACTUAL, routes: c.actual });
    assert.deepEqual(text(plan), c.want);
    assert.equal(plan.conflicts.length, c.conflicts ?? 0);
  });
}

const vx = (n: number): DesiredState => ({
  routes: [{ family: 4, dst: `10.99.${n}.0/24`, gateway: `10.99.${n}.0`, dev: 'flat.vx', onlink: true, node: `n${n}` }],
  neighbours: [{ family: 4, dev: 'flat.vx', ip: `10.99.${n}.0`, mac: `0e:00:00:00:00:0${n}`, node: `n${n}` }],
  fdb: [{ dev: 'flat.vx', mac: `0e:00:00:00:00:0${n}`, dst: `172.29.0.${n}`, node: `n${n}` }],
  unreachable: [],
});
const vxActual = (n: number, dst = `172.29.0.${n}`): ActualState => ({
  routes: [{ family: 4, dst: `10.99.${n}.0/24`, gateway: `10.99.${n}.0`, dev: 'flat.vx', onlink: true, protocol: '241' }],
  neighbours: [{ family: 4, dev: 'flat.vx', ip: `10.99.${n}.0`, mac: `0e:00:00:00:00:0${n}`, permanent: true }],
  fdb: [{ dev: 'flat.vx', mac: `0e:00:00:00:00:0${n}`, dst, permanent: true }],
});

test('vxlan add: neighbour, then FDB, then route (the kernel never has to ARP)', () => {
  assert.deepEqual(text(planSync(vx(2), EMPTY_ACTUAL)), [
    'ip neigh replace 10.99.2.0 lladdr 0e:00:00:00:00:02 dev flat.vx nud permanent',
    '--',
    'bridge fdb replace 0e:00:00:00:00:02 dev flat.vx dst 172.29.0.2 self permanent',
    '--',
    'ip route replace 10.99.2.0/24 via 10.99.2.0 dev flat.vx onlink proto 241',
  ]);
});

test('vxlan delete: route, then FDB, then neighbour', () => {
  assert.deepEqual(text(planSync(EMPTY_DESIRED, vxActual(3))), [
    'ip route del 10.99.3.0/24 via 10.99.3.0 dev flat.vx proto 241',
    '--',
    'bridge fdb del 0e:00:00:00:00:03 dev flat.vx dst 172.29.0.3 self',
    '--',
    'ip neigh del 10.99.3.0 dev flat.vx',
  ]);
});

test('vxlan: steady state is an empty plan; a moved peer only rewrites its FDB entry', () => {
  assert.deepEqual(planSync(vx(2), vxActual(2)).steps, []);
  assert.deepEqual(text(planSync(vx(2), vxActual(2, '172.29.0.77'))), [
    'bridge fdb replace 0e:00:00:00:00:02 dev flat.vx dst 172.29.0.2 self permanent',
  ]);
});

test('vxlan: wrong or dynamic neighbours are replaced; foreign dynamic ones are left to expire', () => {
  const actual: ActualState = {
    ...vxActual(2),
    neighbours: [
      { family: 4, dev: 'flat.vx', ip: '10.99.2.0', mac: '0e:00:00:00:00:02', permanent: false },
      { family: 6, dev: 'flat.vx', ip: 'fe80::1', permanent: false },
    ],
  };
  assert.deepEqual(text(planSync(vx(2), actual)), ['ip neigh replace 10.99.2.0 lladdr 0e:00:00:00:00:02 dev flat.vx nud permanent']);
});

test('vxlan: one peer leaves, one joins: all six steps, every ordering constraint kept', () => {
  const plan = planSync(vx(2), vxActual(3));
  assert.deepEqual(countPlan(plan), { replaced: 3, deleted: 3 });
  assert.deepEqual(text(plan), [
    'ip route del 10.99.3.0/24 via 10.99.3.0 dev flat.vx proto 241',
    'ip neigh replace 10.99.2.0 lladdr 0e:00:00:00:00:02 dev flat.vx nud permanent',
    '--',
    'bridge fdb del 0e:00:00:00:00:03 dev flat.vx dst 172.29.0.3 self',
    'bridge fdb replace 0e:00:00:00:00:02 dev flat.vx dst 172.29.0.2 self permanent',
    '--',
    'ip neigh del 10.99.3.0 dev flat.vx',
    'ip route replace 10.99.2.0/24 via 10.99.2.0 dev flat.vx onlink proto 241',
  ]);
});

test('parsing ip -o route and ip -j output: host routes, default, protocols, metrics, flags', () => {
  const routes = (lines: string[], family: 4 | 6) => lines.flatMap((l) => parseRouteLine(l, family) ?? []);
  const v4 = routes(
    [
      'default via 172.29.0.254 dev eth0 proto static ',
      '10.97.0.5 via 172.29.0.7 dev eth0 proto 241 ',
      '10.99.2.0/24 via 10.99.2.0 dev flat.vx proto 241 onlink ',
      'blackhole 10.99.9.0/24 proto 241 ',
      'unicast 10.99.8.0/24 via 172.29.0.8 dev eth0 proto 241 scope global ',
      '172.29.0.0/16 dev eth0 proto kernel scope link src 172.29.0.11 ',
      '10.98.0.0/24 proto static metric 5 \\\tnexthop via 172.29.0.8 dev eth0 weight 1 \\\tnexthop via 172.29.0.9 dev eth0 weight 1',
      '10.96.0.0/24 via inet6 fe80::1 dev eth0 proto 241 ',
      '10.95.0.0/24 dev flat0 scope link linkdown ',
      '01.2.3.0/24 dev eth0',
      '',
    ],
    4,
  );
  assert.deepEqual(v4, [
    { family: 4, dst: '0.0.0.0/0', gateway: '172.29.0.254', dev: 'eth0', onlink: false, protocol: 'static' },
    { family: 4, dst: '10.97.0.5/32', gateway: '172.29.0.7', dev: 'eth0', onlink: false, protocol: '241' },
    { family: 4, dst: '10.99.2.0/24', gateway: '10.99.2.0', dev: 'flat.vx', onlink: true, protocol: '241' },
    { family: 4, dst: '10.99.8.0/24', gateway: '172.29.0.8', dev: 'eth0', onlink: false, protocol: '241' },
    { family: 4, dst: '172.29.0.0/16', dev: 'eth0', onlink: false, protocol: 'kernel' },
    // a multipath route's hops are not its own gateway and device
    { family: 4, dst: '10.98.0.0/24', onlink: false, protocol: 'static', metric: 5 },
    { family: 4, dst: '10.96.0.0/24', dev: 'eth0', onlink: false, protocol: '241' },
    // no "proto" printed: the kernel's default, boot
    { family: 4, dst: '10.95.0.0/24', dev: 'flat0', onlink: false, protocol: 'boot' },
  ]);
  const v6 = routes(['FD00:99:0:2::/64 via fd00:99:0:2:0:: dev flat.vx proto 241 metric 1024 onlink pref medium'], 6);
  assert.deepEqual(v6, [{ family: 6, dst: 'fd00:99:0:2::/64', gateway: 'fd00:99:0:2::', dev: 'flat.vx', onlink: true, protocol: '241', metric: 1024 }]);
  assert.deepEqual(parseNeighbours('[{"dst":"10.99.2.0","lladdr":"0E:00:00:00:00:02","state":["PERMANENT"]},{"dst":"10.99.3.0","state":["FAILED"]}]', 'flat.vx'), [
    { family: 4, dev: 'flat.vx', ip: '10.99.2.0', mac: '0e:00:00:00:00:02', permanent: true },
    { family: 4, dev: 'flat.vx', ip: '10.99.3.0', permanent: false },
  ]);
  assert.deepEqual(parseFdb('[{"mac":"0e:00:00:00:00:02","dst":"172.29.0.2","flags":["self"],"state":"permanent"}]', 'flat.vx'), [
    { dev: 'flat.vx', mac: '0e:00:00:00:00:02', dst: '172.29.0.2', permanent: true },
  ]);
});

test('batch errors are mapped back to the failing lines', () => {
  const lines = ['route replace 10.99.2.0/24 via 172.29.0.2 dev eth0 proto 241', 'route del 10.99.3.0/24 proto 241'];
  const stderr = 'Error: Nexthop has invalid gateway.\nCommand failed -:1\nRTNETLINK answers: No such process\nCommand failed -:2\n';
  assert.deepEqual(batchFailures('ip', lines, stderr), [
    { tool: 'ip', line: lines[0], message: 'Error: Nexthop has invalid gateway.' },
    { tool: 'ip', line: lines[1], message: 'RTNETLINK answers: No such process' },
  ]);
});

test('runLines hands over output line by line (a last line without newline too) and fails like runOk', async () => {
  const lines: string[] = [];
  await runLines(['printf', 'a b\n\nc\nlast'], (l) => lines.push(l));
  assert.deepEqual(lines, ['a b', '', 'c', 'last']);
  // Lines split across reads arrive whole.
  const long: string[] = [];
  await runLines(['seq', '1', '100000'], (l) => long.push(l));
  assert.equal(long.length, 100_000);
  assert.equal(long.at(-1), '100000');
  await assert.rejects(runLines(['sh', '-c', 'echo partial; echo bad >&2; exit 3'], () => undefined), (e: unknown) => e instanceof CommandError && /exited 3: bad/.test(e.message));
  await assert.rejects(runLines(['seq', '1', '100000'], (l) => {
    if (l === '7') throw new Error('handler failed at 7');
  }), /handler failed at 7/);
});
