// Where a PKI made by src/lab/pki.ts keeps its files: pure path arithmetic, so the lab's planner can name
// them in an agent's command line without loading the code that makes them.
import { join } from 'node:path';

export interface CertFiles {
  readonly cert: string;
  readonly key: string;
}

export const pkiFiles = {
  ca: (dir: string): CertFiles => ({ cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') }),
  server: (dir: string): CertFiles => ({ cert: join(dir, 'server.crt'), key: join(dir, 'server.key') }),
  client: (dir: string, name: string): CertFiles => ({ cert: join(dir, `client-${name}.crt`), key: join(dir, `client-${name}.key`) }),
};
