// Releases a removed node's subnet lease through the store API (what a cluster controller does when a
// Node object is deleted), so peers withdraw its routes without waiting for the lease to expire.
// Runs as `flatnet __release-lease` so that, for etcd, it can run inside the fabric namespace: the only
// place the lab's etcd address is reachable from.
import type { LeaseStore } from '../store/types.ts';
import { pkiFiles } from './pki-files.ts';
import { ETCDCTL_CLIENT } from './topology.ts';

export type StoreChoice =
  | { readonly kind: 'embedded'; readonly dir: string }
  /** pkiDir: the lab's etcd PKI; the release goes in with its CA and the etcdctl client certificate. */
  | { readonly kind: 'etcd'; readonly endpoints: readonly string[]; readonly pkiDir?: string };

export async function releaseLease(node: string, store: StoreChoice): Promise<void> {
  // Loaded on demand: the etcd client costs ~100 ms to load, which the CLI's other commands should not pay.
  let s: LeaseStore;
  if (store.kind === 'embedded') {
    const { EmbeddedStore } = await import('../store/embedded.ts');
    s = new EmbeddedStore({ dir: store.dir });
  } else {
    const { EtcdStore } = await import('../store/etcd.ts');
    const { loadEtcdCredentials } = await import('../agent/etcd-credentials.ts');
    const c = store.pkiDir !== undefined ? pkiFiles.client(store.pkiDir, ETCDCTL_CLIENT) : undefined;
    const creds = store.pkiDir !== undefined && c ? loadEtcdCredentials({ caFile: pkiFiles.ca(store.pkiDir).cert, certFile: c.cert, keyFile: c.key }, undefined) : undefined;
    s = new EtcdStore({ endpoints: store.endpoints, ...(creds?.tls ? { tls: creds.tls } : {}) });
  }
  try {
    await s.release(node);
  } finally {
    await s.close();
  }
}
