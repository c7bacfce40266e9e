// Ctrl-C during `flatnet lab up` (root, real CLI process): the build stops after the step under way and
// removes everything it had made -- namespaces, agents, etcd, the state directory -- and exits 130.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { listNetns } from '../../src/lab/namespaces.ts';
import { cmdlineOf } from '../../src/lab/processes.ts';
import { labDown, newLab } from '../tools/fault-lab.ts';

const FLATNET = new URL('../../dist/bin/flatnet', import.meta.url).pathname;

/** Pids of processes whose command line names `needle` (the lab's root is on every lab process's). */
function processesNaming(needle: string): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid)
    .map(Number)
    .filter((pid) => cmdlineOf(pid)?.includes(needle));
}

describe('lab up interrupted', () => {
  const lab = newLab('int');
  after(() => labDown(lab));

  for (const { when, store } of [
    { when: 'node n2: namespace', store: 'embedded' },
    { when: 'etcd: starting', store: 'etcd' },
  ]) {
    it(`removes what it built when SIGINT arrives at "${when}" (${store} store)`, async (t) => {
      const child = spawn(FLATNET, ['lab', 'up', '--nodes', '3', '--pods', '1', '--store', store, '--prefix', lab.prefix, '--root', lab.root], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      let sent = false;
      child.stderr.on('data', (b: Buffer) => {
        stderr += b.toString();
        if (!sent && stderr.includes(when)) {
          sent = true;
          child.kill('SIGINT');
        }
      });
      child.stdout.resume();
      const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
      t.diagnostic(stderr.trim().split('\n').slice(-3).join(' | '));
      assert.ok(sent, `never saw "${when}": ${stderr}`);
      assert.equal(code, 130, stderr);
      assert.match(stderr, /SIGINT: stopping after the current step/);
      assert.match(stderr, /lab up interrupted \(SIGINT\): removed what it had built/);
      assert.deepEqual(await listNetns(lab.prefix), [], 'no namespace of the lab is left');
      assert.equal(existsSync(lab.root), false, `${lab.root} is gone`);
      assert.deepEqual(processesNaming(lab.root), [], 'no agent or etcd of the lab runs');
    });
  }
});
