// Test and bench helper: a throwaway single-member etcd. The process logic lives in
// src/store/etcd-server.ts so the lab can use it at run time too.
import { startEtcd as startEtcdServer } from '../../src/store/etcd-server.ts';
import type { EtcdServer, EtcdServerOptions } from '../../src/store/etcd-server.ts';

export type { EtcdServer };

/** Starts etcd on free 127.0.0.1 ports and waits until healthy; stop() kills it and removes a temp data dir. */
export function startEtcd(opts: EtcdServerOptions = {}): Promise<EtcdServer> {
  return startEtcdServer(opts);
}
