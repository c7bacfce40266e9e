// EtcdStore against a real etcd 3.4 secured as production etcd is: clients over TLS, and only clients holding
// a certificate its CA signed get in (--client-cert-auth); and, on a second etcd, role-based auth with a user
// allowed under /flatnet/ only. The certificates are made for this run by openssl
// (src/lab/pki.ts) in a temporary directory, removed in after().
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CredentialsError, loadEtcdCredentials } from '../../src/agent/etcd-credentials.ts';
import { createPki } from '../../src/lab/pki.ts';
import type { CertFiles, Pki } from '../../src/lab/pki.ts';
import { EtcdStore } from '../../src/store/etcd.ts';
import type { EtcdStoreOptions } from '../../src/store/etcd.ts';
import { isRetryable, LeaseRequestError } from '../../src/store/types.ts';
import type { AcquireRequest, ClusterNetwork } from '../../src/store/types.ts';
import { runOk } from '../../src/linux/run.ts';
import { startEtcd } from '../tools/etcd.ts';
import type { EtcdServer } from '../tools/etcd.ts';

const network: ClusterNetwork = { clusterCIDRs: ['10.244.0.0/16'], nodePrefixLength: { 4: 24, 6: 64 } };
const req = (node: string, i: number): AcquireRequest => ({ node, network, ttlMs: 30_000, underlayIPs: [`192.168.0.${i}`], backend: 'host-gw' });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A client certificate of `pki`'s CA valid only on 1 January 2020, signed with `openssl ca` (which takes dates). */
async function backdatedClient(pki: Pki, dir: string, name: string): Promise<CertFiles> {
  const work = join(dir, `ca-${name}`);
  mkdirSync(work);
  writeFileSync(join(work, 'index.txt'), '');
  writeFileSync(join(work, 'serial'), '01\n');
  const conf = join(work, 'ca.cnf');
  writeFileSync(conf, `[ca]\ndefault_ca = d\n[d]\ndatabase = ${work}/index.txt\nnew_certs_dir = ${work}\nserial = ${work}/serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n`);
  const key = join(work, 'client.key');
  const csr = join(work, 'client.csr');
  const cert = join(work, 'client.crt');
  await runOk(['openssl', 'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`]);
  await runOk(['openssl', 'ca', '-batch', '-config', conf, '-in', csr, '-out', cert, '-cert', pki.caCert, '-keyfile', join(pki.dir, 'ca.key'), '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-notext']);
  return { cert, key };
}

describe('EtcdStore over TLS with client certificates', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fnt-etcd-tls-'));
  let pki: Pki;
  let rogue: Pki;
  let agent: CertFiles;
  let etcd: EtcdServer | undefined;
  const stores: EtcdStore[] = [];
  let clusterN = 0;

  const open = (opts: Partial<EtcdStoreOptions>): EtcdStore => {
    const s = new EtcdStore({ endpoints: [etcd?.endpoint ?? ''], cluster: `tls${clusterN++}`, callTimeoutMs: 2_000, network, ...opts });
    stores.push(s);
    return s;
  };
  const pem = (file: string): Buffer => readFileSync(file);

  before(async () => {
    pki = await createPki(join(dir, 'pki'), 'fnt-ca', ['127.0.0.1']);
    rogue = await createPki(join(dir, 'rogue'), 'fnt-rogue', ['127.0.0.1']);
    agent = await pki.client('fnt-agent');
    etcd = await startEtcd({ tls: { certFile: pki.server.cert, keyFile: pki.server.key, clientCAFile: pki.caCert } });
  });
  after(async () => {
    for (const s of stores) await s.close();
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('acquires, lists, renews and watches with the CA and a client certificate', async () => {
    assert.match(etcd?.endpoint ?? '', /^https:\/\/127\.0\.0\.1:\d+$/);
    const tls = { ca: pem(pki.caCert), cert: pem(agent.cert), key: pem(agent.key) };
    const a = open({ tls });
    const b = open({ tls, cluster: `tls${clusterN - 1}` });
    let fired = 0;
    const w = b.watch(() => fired++);
    try {
      await sleep(100);
      const lease = await a.acquire(req('a', 1));
      assert.deepEqual(lease.podCIDRs, ['10.244.0.0/24']);
      assert.deepEqual((await b.list()).map((l) => [l.node, l.podCIDRs[0]]), [['a', '10.244.0.0/24']]);
      assert.deepEqual((await a.renew('a', { underlayIPs: ['192.168.0.1'], backend: 'host-gw' }, 30_000)).podCIDRs, ['10.244.0.0/24']);
      const t0 = Date.now();
      while (fired === 0 && Date.now() - t0 < 3_000) await sleep(10);
      assert.ok(fired > 0, 'the watch over TLS saw the change');
    } finally {
      w.close();
    }
  });

  // What each refusal must be: a retryable store error (the agent keeps trying and reports itself not ready),
  // within the call deadline, and nothing written.
  const refused = async (what: string, opts: Partial<EtcdStoreOptions>): Promise<string> => {
    const s = open(opts);
    const t0 = Date.now();
    const err = await s.acquire(req('x', 9)).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof Error, `${what}: acquire succeeded`);
    assert.ok(isRetryable(err), `${what}: ${String(err)} is not a retryable store error`);
    assert.ok(Date.now() - t0 < 10_000, `${what}: took ${Date.now() - t0} ms to fail`);
    return `${what}: ${err.message.split('\n')[0] ?? ''}`;
  };

  it('is refused without a client certificate', async (t) => {
    const why = await refused('no client certificate', { tls: { ca: pem(pki.caCert) } });
    t.diagnostic(why);
    assert.match(why, /bad certificate/, 'the log line says the certificate was refused');
  });

  it('is refused with a client certificate another CA signed', async (t) => {
    const stranger = await rogue.client('fnt-stranger');
    const why = await refused('foreign client certificate', { tls: { ca: pem(pki.caCert), cert: pem(stranger.cert), key: pem(stranger.key) } });
    t.diagnostic(why);
    assert.match(why, /bad certificate/);
  });

  it('does not trust an etcd whose certificate its CA did not sign', async (t) => {
    for (const why of [
      await refused('untrusted server', { tls: { ca: pem(rogue.caCert), cert: pem(agent.cert), key: pem(agent.key) } }),
      await refused('system CAs only', { tls: { cert: pem(agent.cert), key: pem(agent.key) } }),
    ]) {
      t.diagnostic(why);
      assert.match(why, /unable to verify/, 'the log line says the server certificate was not trusted');
    }
  });

  it('refuses a plain-http client at a TLS etcd, and mixed or mismatched endpoint schemes', async (t) => {
    t.diagnostic(await refused('http to an https etcd', { endpoints: [(etcd?.endpoint ?? '').replace('https:', 'http:')] }));
    assert.throws(() => open({ endpoints: ['https://127.0.0.1:1', 'http://127.0.0.1:2'] }), LeaseRequestError);
    assert.throws(() => open({ endpoints: ['http://127.0.0.1:1'], tls: { ca: pem(pki.caCert) } }), /endpoints are http/);
  });

  // flatnetd reads these files at start (src/agent/etcd-credentials.ts): what is wrong with one is said then,
  // naming the flag, instead of surfacing later as an unreachable etcd.
  it('flatnetd refuses unreadable, swapped or mismatched credential files at start, naming the flag', async () => {
    const ok = loadEtcdCredentials({ caFile: pki.caCert, certFile: agent.cert, keyFile: agent.key }, undefined);
    assert.deepEqual(ok.warnings, []);
    assert.ok(ok.tls?.ca && ok.tls.cert && ok.tls.key);
    const day = 24 * 3600_000;
    assert.ok(Math.abs((ok.clientCertNotAfter ?? 0) - (Date.now() + 30 * day)) < day, `the certificate's expiry is read (${ok.clientCertNotAfter})`);
    // Close to its expiry: loaded, with a warning to rotate.
    const soon = await pki.client('fnt-soon', 3);
    const w3 = loadEtcdCredentials({ certFile: soon.cert, keyFile: soon.key }, undefined);
    assert.match(w3.warnings.join('\n'), /client-fnt-soon\.crt expires on .* \(in [23] days\): rotate it \(the agent rereads the files\)/);
    const other = await pki.client('fnt-other');
    const bad: [string, () => unknown, RegExp][] = [
      ['missing CA', () => loadEtcdCredentials({ caFile: join(dir, 'nope.crt') }, undefined), /^--etcd-cafile .*nope\.crt: cannot read it \(ENOENT\)/],
      ['key as the CA', () => loadEtcdCredentials({ caFile: agent.key }, undefined), /^--etcd-cafile .*: not a PEM certificate/],
      ['certificate and key swapped', () => loadEtcdCredentials({ certFile: agent.key, keyFile: agent.cert }, undefined), /^--etcd-certfile .*: not a PEM certificate/],
      ['another certificate\'s key', () => loadEtcdCredentials({ certFile: agent.cert, keyFile: other.key }, undefined), /^--etcd-keyfile .* is not the key of --etcd-certfile/],
      ['a truncated certificate', () => {
        const cut = join(dir, 'cut.crt');
        writeFileSync(cut, readFileSync(agent.cert, 'utf8').slice(0, 120));
        return loadEtcdCredentials({ caFile: cut }, undefined);
      }, /^--etcd-cafile .*cut\.crt: not a valid certificate/],
      ['an empty password file', () => {
        const pw = join(dir, 'empty-pw');
        writeFileSync(pw, '\n', { mode: 0o600 });
        return loadEtcdCredentials(undefined, { username: 'flatnet', passwordFile: pw });
      }, /^--etcd-password-file .*: empty/],
    ];
    for (const [what, load, re] of bad) assert.throws(load, (e: unknown) => e instanceof CredentialsError && re.test(e.message), what);
    // A certificate that expired (openssl ca can back-date one; openssl x509 cannot).
    const expired = await backdatedClient(pki, dir, 'fnt-expired');
    assert.throws(
      () => loadEtcdCredentials({ certFile: expired.cert, keyFile: expired.key }, undefined),
      (e: unknown) => e instanceof CredentialsError && /^--etcd-certfile .*: the certificate expired on Jan +2 00:00:00 2020 GMT/.test(e.message),
    );
    // Readable by others: loaded, with a warning for the log.
    const loose = join(dir, 'loose.key');
    copyFileSync(agent.key, loose);
    chmodSync(loose, 0o644);
    const pw = join(dir, 'pw');
    writeFileSync(pw, 's3cret\n', { mode: 0o644 });
    const w = loadEtcdCredentials({ certFile: agent.cert, keyFile: loose }, { username: 'flatnet', passwordFile: pw });
    assert.equal(w.auth?.password, 's3cret', 'one trailing newline is the file\'s, not the password\'s');
    assert.equal(w.warnings.length, 2);
    assert.match(w.warnings.join('\n'), /loose\.key can be read by users other than its owner/);
  });
});

// A rotated client certificate taken without a restart (EtcdStore.replaceCredentials, which flatnetd calls
// when its credential files change). The etcd maps certificates to users (--client-cert-auth with auth on:
// the common name is the user), so which certificate a call went out with decides whether it is allowed:
// once the old certificate's user loses its role, only a store that really switched keeps working.
describe('EtcdStore taking a rotated client certificate without a restart', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fnt-etcd-rot-'));
  let etcd: EtcdServer | undefined;
  let pki: Pki;
  let ctl: (...args: string[]) => Promise<unknown>;
  const stores: EtcdStore[] = [];
  after(async () => {
    for (const s of stores) await s.close();
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('moves its calls and its watch to the new certificate; a store left on the old one is refused', async () => {
    pki = await createPki(join(dir, 'pki'), 'fnt-ca', ['127.0.0.1']);
    etcd = await startEtcd({ tls: { certFile: pki.server.cert, keyFile: pki.server.key, clientCAFile: pki.caCert } });
    const root = await pki.client('root');
    ctl = (...args: string[]) => runOk(['etcdctl', '--endpoints', etcd?.endpoint ?? '', '--cacert', pki.caCert, '--cert', root.cert, '--key', root.key, ...args]);
    await ctl('user', 'add', 'root', '--no-password');
    await ctl('user', 'grant-role', 'root', 'root');
    await ctl('role', 'add', 'flatnet');
    await ctl('role', 'grant-permission', 'flatnet', '--prefix=true', 'readwrite', '/flatnet/');
    for (const user of ['fnt-agent-old', 'fnt-agent-new']) {
      await ctl('user', 'add', user, '--no-password');
      await ctl('user', 'grant-role', user, 'flatnet');
    }
    await ctl('auth', 'enable');
    const pem = (file: string): Buffer => readFileSync(file);
    const tlsOf = (c: CertFiles) => ({ ca: pem(pki.caCert), cert: pem(c.cert), key: pem(c.key) });
    const oldCert = await pki.client('fnt-agent-old');
    const newCert = await pki.client('fnt-agent-new');
    const open = (c: CertFiles): EtcdStore => {
      const st = new EtcdStore({ endpoints: [etcd?.endpoint ?? ''], cluster: 'rot', callTimeoutMs: 2_000, network, tls: tlsOf(c) });
      stores.push(st);
      return st;
    };
    const rotated = open(oldCert);
    const stayed = open(oldCert);
    let fired = 0;
    const w = rotated.watch(() => fired++);
    try {
      const lease = await rotated.acquire(req('a', 1));
      assert.deepEqual((await stayed.list()).map((l) => l.node), ['a'], 'both start out allowed');

      rotated.replaceCredentials({ tls: tlsOf(newCert) });
      await ctl('user', 'revoke-role', 'fnt-agent-old', 'flatnet');

      const err = await stayed.list().then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof Error && /permission denied/.test(err.message), `the old certificate's user is refused now: ${String(err)}`);
      assert.deepEqual((await rotated.renew('a', { underlayIPs: ['192.168.0.1'], backend: 'host-gw' }, 30_000)).podCIDRs, lease.podCIDRs, 'renewed with the new certificate');
      assert.deepEqual((await rotated.list()).map((l) => l.node), ['a']);
      // The watch was moved too: a change made by someone else still reaches it.
      await sleep(300);
      fired = 0;
      await ctl('put', '/flatnet/rot/unrelated', 'x');
      const t0 = Date.now();
      while (fired === 0 && Date.now() - t0 < 5_000) await sleep(20);
      assert.ok(fired > 0, 'the watch follows the new client');
    } finally {
      w.close();
    }
  });
});

describe('EtcdStore with etcd user auth', () => {
  let etcd: EtcdServer | undefined;
  const stores: EtcdStore[] = [];
  const open = (auth?: { username: string; password: string }): EtcdStore => {
    const s = new EtcdStore({ endpoints: [etcd?.endpoint ?? ''], callTimeoutMs: 2_000, network, ...(auth ? { auth } : {}) });
    stores.push(s);
    return s;
  };

  before(async () => {
    // Auth tokens that expire after a second, so the test sees the client trade its password again.
    etcd = await startEtcd({ extraArgs: ['--auth-token-ttl=1'] });
    const ctl = (...args: string[]) => runOk(['etcdctl', '--endpoints', etcd?.endpoint ?? '', ...args]);
    await ctl('user', 'add', 'root', '--new-user-password=fnt-root-pw');
    await ctl('user', 'grant-role', 'root', 'root');
    // What an operator grants flatnet: its own prefix, nothing else.
    await ctl('role', 'add', 'flatnet');
    await ctl('role', 'grant-permission', 'flatnet', '--prefix=true', 'readwrite', '/flatnet/');
    await ctl('user', 'add', 'flatnet', '--new-user-password=fnt-pw');
    await ctl('user', 'grant-role', 'flatnet', 'flatnet');
    await ctl('auth', 'enable');
  });
  after(async () => {
    for (const s of stores) await s.close();
    await etcd?.stop();
  });

  it('works as a user limited to /flatnet/ (across token expiry), and is refused without the right password', async (t) => {
    const s = open({ username: 'flatnet', password: 'fnt-pw' });
    let fired = 0;
    const w = s.watch(() => fired++);
    try {
      const lease = await s.acquire(req('a', 1));
      assert.deepEqual((await s.list()).map((l) => l.node), ['a']);
      await sleep(2_500); // the token has expired: the next calls must authenticate again by themselves
      assert.deepEqual((await s.renew('a', { underlayIPs: ['192.168.0.1'], backend: 'host-gw' }, 30_000)).podCIDRs, lease.podCIDRs);
      await s.release('a');
      const t0 = Date.now();
      while (fired === 0 && Date.now() - t0 < 3_000) await sleep(10);
      assert.ok(fired > 0, 'the watch works under auth');
    } finally {
      w.close();
    }
    for (const [what, auth] of [
      ['no credentials', undefined],
      ['a wrong password', { username: 'flatnet', password: 'guess' }],
    ] as const) {
      const err = await open(auth).acquire(req('b', 2)).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof Error, `${what}: acquire succeeded`);
      // The message itself (what the agent logs) says why.
      t.diagnostic(`${what}: ${err.message}`);
      assert.match(err.message, /user name is empty|authentication failed/, what);
    }
  });

  // A rotated password file, taken without a restart (flatnetd rereads the file and calls
  // replaceCredentials). Auth tokens here live a second, so a client still holding the old password must
  // authenticate again, and fails; the switched one goes on.
  it('takes a changed password without a restart; a store left on the old one is refused', async () => {
    const rotated = open({ username: 'flatnet', password: 'fnt-pw' });
    const stayed = open({ username: 'flatnet', password: 'fnt-pw' });
    await rotated.acquire(req('r', 3));
    assert.deepEqual((await stayed.list()).map((l) => l.node).includes('r'), true);
    await runOk(['etcdctl', '--endpoints', etcd?.endpoint ?? '', '--user', 'root:fnt-root-pw', 'user', 'passwd', 'flatnet', '--interactive=false'], { input: 'fnt-pw-2\n' });
    rotated.replaceCredentials({ auth: { username: 'flatnet', password: 'fnt-pw-2' } });
    await sleep(2_500); // every token issued before the change has expired
    const err = await stayed.list().then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof Error && /authentication failed/.test(err.message), `the old password is refused now: ${String(err)}`);
    assert.ok((await rotated.renew('r', { underlayIPs: ['192.168.0.3'], backend: 'host-gw' }, 30_000)).podCIDRs.length > 0, 'renewed with the new password');
    await rotated.release('r');
  });
});
