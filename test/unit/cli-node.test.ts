// `flatnet agent` against a real HTTP server on a unix socket standing for flatnetd (the real agent's
// endpoint is exercised by the lab e2e tests); `flatnet ipam` on a reservation directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentCommand, ipamCommand } from '../../src/cli/node.ts';
import { UsageError } from '../../src/cli/usage.ts';

function capture() {
  const out: string[] = [];
  return { io: { out: (t: string) => void out.push(t), err: () => undefined }, text: () => out.join('') };
}

test('flatnet agent status/ready reads the agent endpoint and exits by its answer', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fnt-cli-'));
  const sock = join(dir, 'agent.sock');
  const server = createServer((req, res) => {
    if (req.url === '/status') res.end('{"node":"n1"}');
    else if (req.url === '/readyz') res.writeHead(503).end('not ready: store unreachable\n');
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    const a = capture();
    assert.equal(await agentCommand(['status', '--listen', `unix:${sock}`], a.io), 0);
    assert.equal(a.text(), '{"node":"n1"}');
    const b = capture();
    assert.equal(await agentCommand(['ready', '--listen', `unix:${sock}`], b.io), 1);
    assert.match(b.text(), /store unreachable/);
    await assert.rejects(agentCommand(['frob'], capture().io), UsageError);
    await assert.rejects(agentCommand(['status', '--listen', `unix:${join(dir, 'none.sock')}`], capture().io), /cannot reach flatnetd/);
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('flatnet ipam lists reservations and flags those without a host veth', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fnt-cli-'));
  try {
    mkdirSync(join(dir, 'net1'));
    writeFileSync(join(dir, 'net1', '10.99.0.2'), 'abc123\r\neth0');
    writeFileSync(join(dir, 'net1', 'last_reserved_ip.0'), '10.99.0.2');
    const c = capture();
    assert.equal(await ipamCommand(['--data-dir', dir, '--json'], c.io), 0);
    const rows = JSON.parse(c.text()) as { ip: string; containerID: string; vethPresent: boolean }[];
    assert.deepEqual(rows.map((r) => [r.ip, r.containerID, r.vethPresent]), [['10.99.0.2', 'abc123', false]]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
