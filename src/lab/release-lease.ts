// Releases a removed node's subnet lease through the store API (what a cluster controller does when a
// Node object is deleted), so peers withdraw its routes without waiting for the lease to expire.
// Runs as `flatnet __release-lease` so that, for etcd, it can run inside the fabric namespace: the only
// place the lab's etcd address is reachable from.
import type { LeaseStore } from '../store/types.ts';
import { ETCDCTL_CLIENT, etcdClientTLS } from './topology.ts';

export type StoreChoice =
  | { readonly kind: 'embedded'; readonly dir: string }
  /** labRoot: a lab whose etcd wants TLS; the release goes in with its CA and the etcdctl client certificate. */
  | { readonly kind: 'etcd'; readonly endpoints: readonly string[]; readonly labRoot?: string };

export async function releaseLease(node: string, store: StoreChoice): Promise<void> {
  // Loaded on demand: the etcd client costs ~100 ms to load, which the CLI's other commands should not pay.
  let s: LeaseStore;
  if (store.kind === 'embedded') {
    const { EmbeddedStore } = await import('../store/embedded.ts');
    s = new EmbeddedStore({ dir: store.dir });
  } else {
    const { EtcdStore } = await import('../store/etcd.ts');
    const { loadEtcdCredentials } = await import('../agent/etcd-credentials.ts');
    const tls = store.labRoot !== undefined ? loadEtcdCredentials(etcdClientTLS(store.labRoot, ETCDCTL_CLIENT), undefined).tls : undefined;
    s = new EtcdStore({ endpoints: store.endpoints, ...(tls ? { tls } : {}) });
  }
  try {
    await s.release(node);
  } finally {
    await s.close();
  }
}
