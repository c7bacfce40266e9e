import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAntiSpoofTable, renderAntiSpoofAdd, renderAntiSpoofDelete } from '../../src/plugin/antispoof.ts';
import { attachmentAlias, parseAttachmentAlias } from '../../src/plugin/names.ts';

test('the add transaction re-renders the rules and adds one element per address and one per MAC', () => {
  const s = renderAntiSpoofAdd({ port: 'flv0123456789ab', mac: '02:00:00:00:00:01', ips: ['10.1.0.5', 'fd00::5'] });
  const lines = s.split('\n');
  assert.equal(lines.filter((l) => l.startsWith('add rule')).length, 10, 'constant rule count');
  assert.ok(lines.indexOf('flush chain bridge flatnet prerouting') < lines.findIndex((l) => l.startsWith('add rule')));
  assert.ok(lines.includes('add element bridge flatnet pods_v4 { "flv0123456789ab" . 10.1.0.5 . 02:00:00:00:00:01 }'));
  assert.ok(lines.includes('add element bridge flatnet pods_v6 { "flv0123456789ab" . fd00::5 . 02:00:00:00:00:01 }'));
  assert.ok(lines.includes('add element bridge flatnet pod_macs { "flv0123456789ab" . 02:00:00:00:00:01 }'));
});

test('rule layout: a pod\'s IPv4 frame meets two rules and one lookup; each ethertype ends in a counted drop', () => {
  const rules = renderAntiSpoofAdd({ port: 'flvx', mac: '02:00:00:00:00:01', ips: [] })
    .split('\n')
    .filter((l) => l.startsWith('add rule bridge flatnet prerouting '))
    .map((l) => l.slice('add rule bridge flatnet prerouting '.length));
  assert.deepEqual(rules.slice(0, 3), ['iifname != "flv*" accept', 'ether type ip iifname . ip saddr . ether saddr @pods_v4 accept', 'ether type ip counter drop']);
  // Link-local and unspecified IPv6 sources skip the address check, never the MAC check.
  assert.ok(rules.includes('ether type ip6 ip6 saddr { ::, fe80::/10 } iifname . ether saddr @pod_macs accept'));
  assert.ok(rules.includes('ether type arp iifname . arp saddr ip . ether saddr @pods_v4 accept'));
  // After each ethertype's accepts comes its drop, before any looser rule could accept the frame.
  for (const type of ['ip6', 'arp']) {
    const drop = rules.indexOf(`ether type ${type} counter drop`);
    assert.ok(drop > 0 && rules.every((r, i) => !r.startsWith(`ether type ${type} `) || i <= drop), type);
    assert.ok(drop < rules.indexOf('iifname . ether saddr @pod_macs accept'), type);
  }
  assert.equal(rules.at(-1), 'counter drop');
  assert.ok(!rules.some((r) => r.includes('counter') && !r.endsWith('counter drop')), 'no counter on an accepting rule');
});

test('delete adds each element before deleting it, so a missing one cannot fail the transaction', () => {
  const lines = renderAntiSpoofDelete([{ port: 'flvx', mac: '02:00:00:00:00:01', ips: ['10.1.0.5'] }]).split('\n');
  const el = 'element bridge flatnet pods_v4 { "flvx" . 10.1.0.5 . 02:00:00:00:00:01 }';
  assert.ok(lines.indexOf(`add ${el}`) >= 0 && lines.indexOf(`add ${el}`) < lines.indexOf(`delete ${el}`));
});

test("nft's JSON listing reads back into entries per port", () => {
  const json = {
    nftables: [
      { metainfo: {} },
      { set: { name: 'pod_macs', elem: [{ concat: ['flva', '02:00:00:00:00:0A'] }] } },
      { set: { name: 'pods_v4', elem: [{ concat: ['flva', '10.1.0.5', '02:00:00:00:00:0a'] }] } },
    ],
  };
  const m = parseAntiSpoofTable(json);
  assert.deepEqual([...(m.get('flva')?.macs ?? [])], ['02:00:00:00:00:0a']);
  assert.equal(m.get('flva')?.ips.get('10.1.0.5'), '02:00:00:00:00:0a');
  assert.equal(parseAntiSpoofTable(undefined).size, 0);
});

test('the host veth alias round-trips the attachment and MAC', () => {
  assert.deepEqual(parseAttachmentAlias(attachmentAlias('abc', 'eth0', '02:00:00:00:00:01')), { containerID: 'abc', ifname: 'eth0', mac: '02:00:00:00:00:01' });
  assert.equal(parseAttachmentAlias('someone else'), undefined);
});
