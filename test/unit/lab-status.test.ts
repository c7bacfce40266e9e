// How `flatnet lab status` prints what it collected (src/lab/status.ts): the node table, with each node's
// plugin calls as its agent counts them. Collecting needs a lab: test/e2e/lab-lifecycle.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type StatusReport, pluginCalls, renderStatus } from '../../src/lab/status.ts';

const calls = (o: Partial<{ ok: number; error: number; declined: number; undone: number; inFlight: number }>) => ({ ok: 0, error: 0, declined: 0, undone: 0, inFlight: 0, ...o });

test('a node’s plugin calls: served (ok or CNI error) and declined, with what went wrong only when something did', () => {
  assert.equal(pluginCalls(null), '-');
  assert.equal(pluginCalls(calls({})), '0 served, 0 declined');
  assert.equal(pluginCalls(calls({ ok: 3 })), '3 served, 0 declined');
  assert.equal(pluginCalls(calls({ ok: 3, error: 1, declined: 2 })), '4 served, 2 declined (1 answered with an error)');
  assert.equal(pluginCalls(calls({ ok: 5, undone: 1, inFlight: 2 })), '5 served, 0 declined (1 undone, 2 in flight)');
});

test('the node table has a column for the plugin calls, "-" for a node whose agent is down', () => {
  const report: StatusReport = {
    root: '/run/flatnet-lab',
    prefix: 'fnl-',
    phase: 'up',
    options: { backend: 'host-gw', store: 'embedded', topology: 'flat', ipv6: false },
    fabric: { netns: 'fnl-fabric', bridges: ['fab0'] },
    nodes: [
      { name: 'n1', netns: 'fnl-n1', segment: 'fab0', underlayIPs: ['172.29.0.11'], podCIDRs: ['10.244.0.0/24'], agent: { pid: 101, health: 'ready' }, pluginCalls: calls({ ok: 2 }) },
      { name: 'n2', netns: 'fnl-n2', segment: 'fab0', underlayIPs: ['172.29.0.12'], podCIDRs: ['10.244.1.0/24'], agent: { pid: null, health: 'down: no socket' }, pluginCalls: null },
    ],
    pods: [],
    outside: { netns: 'fnl-out', ips: ['203.0.113.10'] },
  };
  const lines = renderStatus(report).split('\n');
  const header = lines.find((l) => l.includes('NAME') && l.includes('AGENT')) ?? '';
  assert.ok(header.includes('PLUGIN CALLS'), header);
  const col = header.indexOf('PLUGIN CALLS');
  const n1 = lines.find((l) => l.trimStart().startsWith('n1 '))!;
  const n2 = lines.find((l) => l.trimStart().startsWith('n2 '))!;
  assert.equal(n1.slice(col).split(/\s{2,}/)[0], '2 served, 0 declined');
  assert.equal(n2.slice(col).split(/\s{2,}/)[0], '-');
  assert.match(n2, /down: no socket \(pid \?\)$/);
});
