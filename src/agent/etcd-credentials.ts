// Reads the files --etcd-cafile/--etcd-certfile/--etcd-keyfile/--etcd-password-file name: at start, and
// again whenever one of them changes (the agent looks every full resync, so a rotated certificate or
// password takes effect without a restart). Each file is checked for what it must hold, so a wrong path or
// a swapped certificate and key is refused with the flag's name: at start the agent stops, later it keeps
// the credentials it has, rather than either surfacing as an unreachable etcd.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { EtcdTLSFiles } from './options.ts';

export class CredentialsError extends Error {
  override readonly name = 'CredentialsError';
}

export interface EtcdCredentials {
  readonly tls?: { readonly ca?: Buffer; readonly cert?: Buffer; readonly key?: Buffer };
  readonly auth?: { readonly username: string; readonly password: string };
  /** When the client certificate expires (ms since the epoch), for the agent's metric. */
  readonly clientCertNotAfter?: number;
  /** Things worth a log line that do not stop the agent (a private key others can read, an expiry close by). */
  readonly warnings: readonly string[];
}

/** A client certificate closer than this to its expiry is logged at start: time to rotate it. */
export const EXPIRY_WARNING_MS = 14 * 24 * 3600_000;

function read(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new CredentialsError(`${flag} ${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
}

const CERT = /-----BEGIN CERTIFICATE-----/;
const KEY = /-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----/;

function pem(flag: string, path: string, want: RegExp, what: string): Buffer {
  const b = read(flag, path);
  const text = b.toString('latin1');
  if (!want.test(text)) throw new CredentialsError(`${flag} ${path}: not a PEM ${what}`);
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(text)) throw new CredentialsError(`${flag} ${path}: the key is encrypted; flatnetd needs it unencrypted (and readable by root only)`);
  return b;
}

/** Parses the first certificate of a PEM file and refuses one outside its validity period. */
function certificate(flag: string, path: string, pemBytes: Buffer): X509Certificate {
  let c: X509Certificate;
  try {
    c = new X509Certificate(pemBytes);
  } catch (e) {
    throw new CredentialsError(`${flag} ${path}: not a valid certificate (${(e as Error).message})`);
  }
  const now = Date.now();
  if (Date.parse(c.validTo) < now) throw new CredentialsError(`${flag} ${path}: the certificate expired on ${c.validTo}`);
  if (Date.parse(c.validFrom) > now) throw new CredentialsError(`${flag} ${path}: the certificate is not valid before ${c.validFrom}`);
  return c;
}

export function loadEtcdCredentials(tls: EtcdTLSFiles | undefined, auth: { readonly username: string; readonly passwordFile: string } | undefined): EtcdCredentials {
  const warnings: string[] = [];
  let notAfter: number | undefined;
  const out: { -readonly [K in 'tls' | 'auth']?: NonNullable<EtcdCredentials[K]> } = {};
  if (tls) {
    const ca = tls.caFile !== undefined ? pem('--etcd-cafile', tls.caFile, CERT, 'certificate') : undefined;
    const cert = tls.certFile !== undefined ? pem('--etcd-certfile', tls.certFile, CERT, 'certificate') : undefined;
    const key = tls.keyFile !== undefined ? pem('--etcd-keyfile', tls.keyFile, KEY, 'private key') : undefined;
    if (ca) certificate('--etcd-cafile', tls.caFile ?? '', ca);
    const c = cert ? certificate('--etcd-certfile', tls.certFile ?? '', cert) : undefined;
    if (c) {
      notAfter = Date.parse(c.validTo);
      const days = Math.floor((notAfter - Date.now()) / (24 * 3600_000));
      if (notAfter - Date.now() < EXPIRY_WARNING_MS) warnings.push(`--etcd-certfile ${tls.certFile ?? ''} expires on ${c.validTo} (in ${days} days): rotate it (the agent rereads the files)`);
    }
    if (c && key) {
      let k;
      try {
        k = createPrivateKey(key);
      } catch (e) {
        throw new CredentialsError(`--etcd-keyfile ${tls.keyFile ?? ''}: not a usable private key (${(e as Error).message})`);
      }
      if (!c.checkPrivateKey(k)) throw new CredentialsError(`--etcd-keyfile ${tls.keyFile ?? ''} is not the key of --etcd-certfile ${tls.certFile ?? ''}`);
    }
    if (tls.keyFile !== undefined && (statSync(tls.keyFile).mode & 0o077) !== 0) {
      warnings.push(`--etcd-keyfile ${tls.keyFile} can be read by users other than its owner`);
    }
    out.tls = { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
  }
  if (auth) {
    // One trailing newline is the file's, not the password's (echo pw > file).
    const password = read('--etcd-password-file', auth.passwordFile).toString('utf8').replace(/\r?\n$/, '');
    if (password === '') throw new CredentialsError(`--etcd-password-file ${auth.passwordFile}: empty`);
    if ((statSync(auth.passwordFile).mode & 0o077) !== 0) warnings.push(`--etcd-password-file ${auth.passwordFile} can be read by users other than its owner`);
    out.auth = { username: auth.username, password };
  }
  return { ...out, ...(notAfter !== undefined ? { clientCertNotAfter: notAfter } : {}), warnings };
}
