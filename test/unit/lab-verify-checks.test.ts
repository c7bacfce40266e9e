// What verify checks and how it judges and prints: the Kubernetes network model as table-driven rules.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseReply, unmapAddress } from '../../src/lab/echo.ts';
import { planNode } from '../../src/lab/topology.ts';
import type { LabOptions } from '../../src/lab/topology.ts';
import { LARGE, cellOf, countByCategory, judge, planChecks, renderMatrix } from '../../src/lab/verify-checks.ts';
import type { Check, VerifyInput } from '../../src/lab/verify-checks.ts';

const o: Pick<LabOptions, 'prefix' | 'topology' | 'ipv6'> = { prefix: 'fnl-', topology: 'routed', ipv6: false };
const input = (backend: 'host-gw' | 'vxlan'): VerifyInput => ({
  backend,
  prefix: 'fnl-',
  nodes: [1, 2].map((i) => ({ plan: planNode(i, o), addresses: [`172.29.${i - 1}.1${i}`, `10.244.${i - 1}.1`] })),
  pods: [
    { name: 'fnl-n1-p1', netns: 'fnl-n1-p1', node: 'n1', ips: ['10.244.0.2'] },
    { name: 'fnl-n1-p2', netns: 'fnl-n1-p2', node: 'n1', ips: ['10.244.0.3'] },
    { name: 'fnl-n2-p1', netns: 'fnl-n2-p1', node: 'n2', ips: ['10.244.1.2'] },
  ],
  outside: { netns: 'fnl-out', ips: ['203.0.113.10'] },
});

const find = (cs: Check[], from: string, to: string, proto: string, size?: number): Check => {
  const c = cs.find((x) => x.from === from && x.to === to && x.request.proto === proto && (size === undefined || x.request.size === size));
  assert.ok(c, `${from} -> ${to} ${proto} ${size ?? ''}`);
  return c;
};

describe('verify: planning', () => {
  const cs = planChecks(input('host-gw'));

  it('checks every pod pair in TCP and UDP, and 2000 B only across nodes', () => {
    find(cs, 'fnl-n1-p1', 'fnl-n1-p2', 'tcp');
    find(cs, 'fnl-n1-p1', 'fnl-n1-p2', 'udp');
    assert.equal(cs.some((c) => c.from === 'fnl-n1-p1' && c.to === 'fnl-n1-p2' && c.request.size === LARGE), false);
    find(cs, 'fnl-n1-p1', 'fnl-n2-p1', 'tcp', LARGE);
    find(cs, 'fnl-n1-p1', 'fnl-n2-p1', 'udp', LARGE);
  });

  it('expects the client pod own address (no NAT) between pods', () => {
    assert.deepEqual(find(cs, 'fnl-n1-p1', 'fnl-n2-p1', 'tcp').expectSaw, ['10.244.0.2']);
  });

  it('expects the node underlay address at the outside host (masquerade)', () => {
    const c = find(cs, 'fnl-n2-p1', 'outside', 'udp');
    assert.deepEqual(c.expectSaw, ['172.29.1.12']);
    assert.equal(c.expectReach, true);
  });

  it('expects one of the node own addresses for node-to-pod', () => {
    assert.deepEqual(find(cs, 'n1', 'fnl-n1-p1', 'tcp').expectSaw, ['172.29.0.11', '10.244.0.1']);
    assert.equal(find(cs, 'n1', 'fnl-n1-p1', 'tcp').category, 'node-pod own node');
    assert.equal(find(cs, 'n1', 'fnl-n2-p1', 'tcp').category, 'node-pod other node');
  });

  it('expects host-gw to be blocked across routed segments, vxlan not', () => {
    assert.equal(find(cs, 'fnl-n1-p1', 'fnl-n2-p1', 'tcp').expectReach, false);
    assert.equal(find(cs, 'n1', 'fnl-n2-p1', 'udp').expectReach, false);
    assert.equal(find(planChecks(input('vxlan')), 'fnl-n1-p1', 'fnl-n2-p1', 'tcp').expectReach, true);
  });

  it('plans IPv6 only for pods that have an IPv6 address', () => {
    assert.equal(cs.some((c) => c.family === 6), false);
    const dual = input('vxlan');
    const withV6 = { ...dual, pods: dual.pods.map((p, i) => ({ ...p, ips: [...p.ips, `fd00:10:244::${i + 2}`] })), outside: { netns: 'fnl-out', ips: ['203.0.113.10', '2001:db8:ff::10'] } };
    const v6 = planChecks(withV6).filter((c) => c.family === 6);
    assert.ok(v6.some((c) => c.to === 'fnl-n2-p1' && c.request.addr === 'fd00:10:244::4'));
    assert.equal(v6.some((c) => c.to === 'outside'), false, 'nodes without an IPv6 underlay address: no IPv6 masquerade check');
  });
});

describe('verify: judging', () => {
  const cs = planChecks(input('vxlan'));
  const c = find(cs, 'fnl-n1-p1', 'fnl-n2-p1', 'tcp', LARGE);
  const ok = { id: c.id, ok: true, saw: '10.244.0.2', bytes: LARGE, returned: LARGE, ms: 3 };

  it('passes a reply from the right source with every byte both ways', () => {
    assert.equal(judge(c, ok).pass, true);
  });
  it('fails NAT between pods', () => {
    const j = judge(c, { ...ok, saw: '172.29.0.11' });
    assert.equal(j.pass, false);
    assert.match(j.why, /saw 172\.29\.0\.11, expected 10\.244\.0\.2/);
  });
  it('fails a short exchange (MTU trouble)', () => {
    assert.equal(judge(c, { ...ok, returned: 1400 }).pass, false);
  });
  it('fails a timeout', () => {
    assert.equal(judge(c, { id: c.id, ok: false, error: 'timeout', ms: 3000 }).pass, false);
  });
  it('passes a blocked probe only when blocking was expected', () => {
    const blocked = find(planChecks(input('host-gw')), 'fnl-n1-p1', 'fnl-n2-p1', 'tcp');
    assert.equal(judge(blocked, { id: blocked.id, ok: false, error: 'timeout', ms: 1000 }).pass, true);
    assert.equal(judge(blocked, { ...ok, id: blocked.id, bytes: 64, returned: 64 }).pass, false);
  });
});

describe('verify: rendering', () => {
  const cs = planChecks(input('host-gw'));
  const results = cs.map((c) =>
    judge(c, c.expectReach ? { id: c.id, ok: true, saw: c.expectSaw[0]!, bytes: c.request.size, returned: c.request.size, ms: 1 } : { id: c.id, ok: false, error: 'timeout', ms: 1000 }),
  );

  it('prints one row per sender and one column per pod plus the outside host', () => {
    const text = renderMatrix(results, 'fnl-', ['fnl-n1-p1', 'fnl-n1-p2', 'fnl-n2-p1']);
    assert.equal(
      text,
      [
        'IPv4:',
        '  from \\ to  n1-p1    n1-p2    n2-p1    outside',
        '  n1-p1      ·        ok       blocked  ok',
        '  n1-p2      ok       ·        blocked  ok',
        '  n2-p1      blocked  blocked  ·        ok',
        '  n1         ok       ok       blocked  -',
        '  n2         blocked  blocked  ok       -',
        '',
      ].join('\n'),
    );
  });

  it('marks a pair FAIL when any of its probes failed', () => {
    const bad = results.map((r, i) => (i === 0 ? { ...r, pass: false } : r));
    assert.equal(cellOf(bad.filter((r) => r.check.from === 'fnl-n1-p1' && r.check.to === 'fnl-n1-p2')), 'FAIL');
    assert.equal(cellOf([]), '-');
  });

  it('counts by category and family', () => {
    const counts = countByCategory(results);
    const across = counts.find((c) => c.category === 'pod-pod across nodes');
    assert.deepEqual(across, { category: 'pod-pod across nodes', family: 4, total: 8, passed: 8, blocked: 8 });
  });
});

describe('echo reply format', () => {
  it('unwraps IPv4-mapped IPv6 senders', () => {
    assert.equal(unmapAddress('::ffff:10.244.0.2'), '10.244.0.2');
    assert.equal(unmapAddress('fd00::2'), 'fd00::2');
  });
  it('splits the header line from the returned payload', () => {
    const { reply, returned } = parseReply(Buffer.concat([Buffer.from('{"saw":"10.0.0.1","bytes":3}\n'), Buffer.from('abc')]));
    assert.deepEqual(reply, { saw: '10.0.0.1', bytes: 3 });
    assert.equal(returned, 3);
    assert.throws(() => parseReply(Buffer.from('no newline')));
  });
});
