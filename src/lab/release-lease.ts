// Releases a removed node's subnet lease through the store API (what a cluster controller does when a
// Node object is deleted), so peers withdraw its routes without waiting for the lease to expire.
// Runs as `flatnet __release-lease` so that, for etcd, it can run inside the fabric namespace: the only
// place the lab's etcd address is reachable from.
import type { LeaseStore } from '../store/types.ts';

export type StoreChoice = { readonly kind: 'embedded'; readonly dir: string } | { readonly kind: 'etcd'; readonly endpoints: readonly string[] };

export async function releaseLease(node: string, store: StoreChoice): Promise<void> {
  // Loaded on demand: the etcd client costs ~100 ms to load, which the CLI's other commands should not pay.
  let s: LeaseStore;
  if (store.kind === 'embedded') {
    const { EmbeddedStore } = await import('../store/embedded.ts');
    s = new EmbeddedStore({ dir: store.dir });
  } else {
    const { EtcdStore } = await import('../store/etcd.ts');
    s = new EtcdStore({ endpoints: store.endpoints });
  }
  try {
    await s.release(node);
  } finally {
    await s.close();
  }
}
