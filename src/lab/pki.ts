// A throwaway certificate authority for an etcd that speaks TLS and checks its clients, as production etcd
// does (kubeadm's, for one): the CA, a server certificate for the etcd's address and client certificates the
// agents present. Made with the openssl command (argv only, no shell); EC P-256 keys, valid for 30 days.
// Keys are written 0600 in a directory the caller owns.
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runOk } from '../linux/run.ts';
import { type CertFiles, pkiFiles } from './pki-files.ts';

export type { CertFiles };

export interface Pki {
  readonly dir: string;
  /** The CA's certificate: what clients trust etcd by, and what etcd trusts clients by. */
  readonly caCert: string;
  readonly server: CertFiles;
  /** Signs a client certificate with common name `name` (etcd's user when it maps certificates to users). */
  client(name: string, days?: number): Promise<CertFiles>;
}

const DAYS = 30;
const CURVE = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

async function signed(dir: string, ca: CertFiles, name: string, file: string, extensions: string, days: number): Promise<CertFiles> {
  // The name becomes a file name and openssl's -subj, where "/" and "+" mean something.
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new Error(`certificate name ${JSON.stringify(name)}: letters, digits, ".", "_" and "-" only`);
  const key = join(dir, `${file}.key`);
  const csr = join(dir, `${file}.csr`);
  const cert = join(dir, `${file}.crt`);
  const ext = join(dir, `${file}.ext`);
  writeFileSync(ext, extensions, { mode: 0o600 });
  await runOk(['openssl', 'req', ...CURVE, '-keyout', key, '-out', csr, '-subj', `/CN=${name}`]);
  chmodSync(key, 0o600);
  // A random serial each time: two certificates with one issuer and serial would confuse a verifier.
  await runOk(['openssl', 'x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', `0x${randomSerial()}`, '-days', String(days), '-extfile', ext, '-out', cert]);
  rmSync(csr, { force: true });
  rmSync(ext, { force: true });
  return { cert, key };
}

/** 16 random bytes as hex, its top bit clear (a serial is a positive number). */
function randomSerial(): string {
  return randomBytes(16).toString('hex').replace(/^[89a-f]/, '1');
}

/** The PKI in `dir`, made earlier by createPki (its CA signs further client certificates). */
export function openPki(dir: string): Pki {
  const ca = pkiFiles.ca(dir);
  return {
    dir,
    caCert: ca.cert,
    server: pkiFiles.server(dir),
    client: (clientName, days = DAYS) => signed(dir, ca, clientName, `client-${clientName}`, 'extendedKeyUsage=clientAuth\n', days),
  };
}

/**
 * Creates a CA named `name` in `dir` and a server certificate valid for `serverIPs`. The server certificate
 * may also act as a client (etcd dials itself with it).
 */
export async function createPki(dir: string, name: string, serverIPs: readonly string[]): Promise<Pki> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const ca = pkiFiles.ca(dir);
  await runOk(['openssl', 'req', '-x509', ...CURVE, '-keyout', ca.key, '-out', ca.cert, '-days', String(DAYS), '-subj', `/CN=${name}`]);
  chmodSync(ca.key, 0o600);
  const san = serverIPs.map((ip) => `IP:${ip}`).join(',');
  await signed(dir, ca, `${name}-etcd`, 'server', `subjectAltName=${san}\nextendedKeyUsage=serverAuth,clientAuth\n`, DAYS);
  return openPki(dir);
}
