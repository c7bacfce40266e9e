import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FORWARD_COMMENT,
  ForwardAcceptConfigError,
  commentOf,
  formatRule,
  isOurRule,
  nftFilterFamilies,
  nftForwardPolicy,
  parseChainListing,
  planForwardAccept,
  splitSaveLine,
  wantedForwardRules,
} from '../../src/agent/forward-accept.ts';

const CLUSTER = ['10.99.0.0/16', 'fd00:99::/48'];

// `iptables-nft -S FORWARD` on a Debian host running Docker, with flatnet's rules appended.
const DOCKER_HOST = `-P FORWARD DROP
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A FORWARD -s 10.99.0.0/16 -m comment --comment "flatnet: cluster traffic" -j ACCEPT
-A FORWARD -d 10.99.0.0/16 -m comment --comment "flatnet: cluster traffic" -j ACCEPT
`;

const ours = (dir: '-s' | '-d', cidr: string): string[] => [dir, cidr, '-m', 'comment', '--comment', FORWARD_COMMENT, '-j', 'ACCEPT'];

test('splits iptables-save lines, quoted comments with escapes included', () => {
  assert.deepEqual(splitSaveLine('-A FORWARD -s 10.99.0.0/16 -m comment --comment "flatnet: cluster traffic" -j ACCEPT'), [
    '-A', 'FORWARD', '-s', '10.99.0.0/16', '-m', 'comment', '--comment', 'flatnet: cluster traffic', '-j', 'ACCEPT',
  ]);
  assert.deepEqual(splitSaveLine('-A FORWARD -d 10.99.0.0/16 -m comment --comment "a \\"q\\" \\\\x" -j ACCEPT').slice(6, 8), ['--comment', 'a "q" \\x']);
  assert.deepEqual(splitSaveLine('  -P   FORWARD DROP  '), ['-P', 'FORWARD', 'DROP']);
  assert.deepEqual(splitSaveLine('-A X --comment ""'), ['-A', 'X', '--comment', '']);
  assert.deepEqual(splitSaveLine(''), []);
});

test('parses the policy and the rules of the chain, and only of that chain', () => {
  const l = parseChainListing(`${DOCKER_HOST}-A DOCKER-USER -j RETURN\n-P INPUT ACCEPT\n`);
  assert.equal(l.policy, 'DROP');
  assert.equal(l.rules.length, 8);
  assert.deepEqual(l.rules[0], ['-j', 'DOCKER-USER']);
  assert.deepEqual(l.rules[6], ours('-s', '10.99.0.0/16'));
  assert.deepEqual(parseChainListing('-P FORWARD ACCEPT\n'), { policy: 'ACCEPT', rules: [] });
  assert.deepEqual(parseChainListing(''), { rules: [] });
});

test('a rule is ours only by a comment starting "flatnet:"', () => {
  assert.ok(isOurRule(ours('-s', '10.0.0.0/8')));
  assert.ok(isOurRule(['-s', '10.0.0.0/8', '-m', 'comment', '--comment', 'flatnet: old label', '-j', 'ACCEPT']));
  assert.ok(!isOurRule(['-s', '10.0.0.0/8', '-m', 'comment', '--comment', 'flatnetwork dmz', '-j', 'ACCEPT']));
  assert.ok(!isOurRule(['-s', '10.0.0.0/8', '-m', 'comment', '--comment', 'kubernetes forwarding rules', '-j', 'ACCEPT']));
  assert.ok(!isOurRule(['-s', '10.0.0.0/8', '-j', 'ACCEPT']));
  assert.equal(commentOf(['-j', 'ACCEPT', '--comment']), undefined);
});

test('wanted: source and destination accepts per cluster CIDR of the family, only under a DROP policy', () => {
  assert.deepEqual(wantedForwardRules(CLUSTER, 4, 'DROP'), [ours('-s', '10.99.0.0/16'), ours('-d', '10.99.0.0/16')]);
  assert.deepEqual(wantedForwardRules(CLUSTER, 6, 'DROP'), [ours('-s', 'fd00:99::/48'), ours('-d', 'fd00:99::/48')]);
  // Canonical text, as iptables prints it back (so listing and wanted compare equal).
  assert.deepEqual(wantedForwardRules(['FD00:0099:0::/48'], 6, 'DROP')[0]?.[1], 'fd00:99::/48');
  assert.deepEqual(wantedForwardRules(CLUSTER, 4, 'ACCEPT'), []);
  assert.deepEqual(wantedForwardRules(CLUSTER, 4, undefined), []);
  assert.deepEqual(wantedForwardRules(['10.99.0.0/16'], 6, 'DROP'), []);
  for (const bad of ['10.99.0.1/16', '10.99.0.0/16 -j DROP', 'example.com/16']) {
    assert.throws(() => wantedForwardRules([bad], 4, 'ACCEPT'), ForwardAcceptConfigError);
  }
});

test('plan: nothing to do when the rules are there, after Docker\'s', () => {
  const plan = planForwardAccept(parseChainListing(DOCKER_HOST), wantedForwardRules(CLUSTER, 4, 'DROP'));
  assert.deepEqual(plan, { add: [], remove: [], kept: 2 });
});

test('plan: adds what is missing, never touches foreign rules', () => {
  const listing = parseChainListing('-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -s 10.99.0.0/16 -j ACCEPT\n-A FORWARD -d 10.99.0.0/16 -m comment --comment "flatnet: cluster traffic" -j ACCEPT\n');
  const plan = planForwardAccept(listing, wantedForwardRules(CLUSTER, 4, 'DROP'));
  // An identical rule without our comment is someone else's: ours is added beside it, theirs stays.
  assert.deepEqual(plan, { add: [ours('-s', '10.99.0.0/16')], remove: [], kept: 1 });
});

test('plan: cluster CIDR changed -> the new rules are added and only ours of the old CIDR removed', () => {
  const listing = parseChainListing(`${DOCKER_HOST}-A FORWARD -s 10.98.0.0/16 -m comment --comment "someone else" -j ACCEPT\n`);
  const plan = planForwardAccept(listing, wantedForwardRules(['10.98.0.0/16'], 4, 'DROP'));
  assert.deepEqual(plan.add, [ours('-s', '10.98.0.0/16'), ours('-d', '10.98.0.0/16')]);
  assert.deepEqual(plan.remove, [ours('-s', '10.99.0.0/16'), ours('-d', '10.99.0.0/16')]);
});

test('plan: policy no longer DROP -> ours go; duplicates and stale labels of ours go too', () => {
  const accept = parseChainListing(DOCKER_HOST.replace('-P FORWARD DROP', '-P FORWARD ACCEPT'));
  const p1 = planForwardAccept(accept, wantedForwardRules(CLUSTER, 4, accept.policy));
  assert.deepEqual(p1, { add: [], remove: [ours('-s', '10.99.0.0/16'), ours('-d', '10.99.0.0/16')], kept: 0 });

  const messy = parseChainListing(
    `${DOCKER_HOST}-A FORWARD -s 10.99.0.0/16 -m comment --comment "flatnet: cluster traffic" -j ACCEPT\n` +
      '-A FORWARD -i flat0 -m comment --comment "flatnet: from an older version" -j ACCEPT\n',
  );
  const p2 = planForwardAccept(messy, wantedForwardRules(CLUSTER, 4, 'DROP'));
  assert.deepEqual(p2.add, []);
  assert.equal(p2.kept, 2);
  assert.deepEqual(p2.remove, [ours('-s', '10.99.0.0/16'), ['-i', 'flat0', '-m', 'comment', '--comment', 'flatnet: from an older version', '-j', 'ACCEPT']]);
});

test('plan on an empty chain adds all wanted rules in order', () => {
  const plan = planForwardAccept(parseChainListing('-P FORWARD DROP\n'), wantedForwardRules(CLUSTER, 6, 'DROP'));
  assert.deepEqual(plan, { add: [ours('-s', 'fd00:99::/48'), ours('-d', 'fd00:99::/48')], remove: [], kept: 0 });
});

test('nft JSON: iptables-nft filter tables and the FORWARD base chain policy', () => {
  const tables = {
    nftables: [
      { metainfo: { version: '1.0.6' } },
      { table: { family: 'inet', name: 'flatnet', handle: 1 } },
      { table: { family: 'ip', name: 'filter', handle: 2 } },
      { table: { family: 'ip6', name: 'nat', handle: 3 } },
    ],
  };
  assert.deepEqual(nftFilterFamilies(tables), [4]);
  assert.deepEqual(nftFilterFamilies({ nftables: [{ table: { family: 'ip6', name: 'filter' } }, { table: { family: 'ip', name: 'filter' } }] }), [4, 6]);
  assert.deepEqual(nftFilterFamilies({ nftables: [{ metainfo: {} }] }), []);
  assert.deepEqual(nftFilterFamilies(undefined), []);
  assert.deepEqual(nftFilterFamilies('junk'), []);

  const chain = (family: string, policy?: string): unknown => ({
    nftables: [{ metainfo: {} }, { chain: { family, table: 'filter', name: 'FORWARD', handle: 1, type: 'filter', hook: 'forward', prio: 0, ...(policy ? { policy } : {}) } }],
  });
  assert.equal(nftForwardPolicy(chain('ip', 'drop'), 4), 'DROP');
  assert.equal(nftForwardPolicy(chain('ip', 'drop'), 6), undefined);
  assert.equal(nftForwardPolicy(chain('ip6', 'accept'), 6), 'ACCEPT');
  assert.equal(nftForwardPolicy(chain('ip6'), 6), 'ACCEPT');
  assert.equal(nftForwardPolicy({ nftables: [{ chain: { family: 'ip', table: 'filter', name: 'FORWARD' } }] }, 4), undefined, 'a regular chain is no FORWARD hook');
  assert.equal(nftForwardPolicy(undefined, 4), undefined);
});

test('formatRule quotes what needs quoting, readable in logs', () => {
  assert.equal(formatRule('-A', ours('-s', '10.99.0.0/16')), '-A FORWARD -s 10.99.0.0/16 -m comment --comment "flatnet: cluster traffic" -j ACCEPT');
  assert.equal(formatRule('-D', ['-m', 'comment', '--comment', 'a "b"']), '-D FORWARD -m comment --comment "a \\"b\\""');
  // The log line, split again, gives the same arguments back.
  const spec = ['-d', 'fd00:99::/48', '-m', 'comment', '--comment', 'x \\ "y"', '-j', 'ACCEPT'];
  assert.deepEqual(splitSaveLine(formatRule('-A', spec)).slice(2), spec);
});
