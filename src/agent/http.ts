// The agent's operations endpoint: /healthz (the process is alive and its loop turns), /readyz (lease, CNI
// config, routes and rules are in place), /metrics (Prometheus) and /status (JSON for tools and the lab).
// It listens where the config says: loopback by default, or a unix socket (mode 0600) that pods cannot see.
import { createServer, type Server } from 'node:http';
import { chmodSync, rmSync } from 'node:fs';
import type { ListenAddress } from './options.ts';

export interface Endpoints {
  healthy(): boolean;
  ready(): { ready: boolean; reasons: string[] };
  metrics(): string;
  status(): unknown;
}

export function startHttp(addr: ListenAddress, ep: Endpoints): Promise<Server> {
  const server = createServer((req, res) => {
    const send = (code: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET') return send(405, 'method not allowed\n');
    switch ((req.url ?? '/').split('?')[0] ?? '/') {
      case '/healthz':
        return ep.healthy() ? send(200, 'ok\n') : send(503, 'reconcile loop stalled\n');
      case '/readyz': {
        const r = ep.ready();
        return r.ready ? send(200, 'ready\n') : send(503, `not ready: ${r.reasons.join('; ')}\n`);
      }
      case '/metrics':
        return send(200, ep.metrics(), 'text/plain; version=0.0.4; charset=utf-8');
      case '/status':
        return send(200, JSON.stringify(ep.status(), null, 2) + '\n', 'application/json');
      default:
        return send(404, 'not found\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    if (addr.kind === 'unix') {
      rmSync(addr.path, { force: true }); // a socket left by a killed agent
      server.listen(addr.path, () => {
        chmodSync(addr.path, 0o600);
        resolve(server);
      });
    } else {
      server.listen(addr.port, addr.host, () => resolve(server));
    }
  });
}
