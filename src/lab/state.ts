// The lab's record of itself: <root>/state.json, rewritten (temp file + rename) after every step of
// `up` and every change, so a crash leaves a readable record of what had been built so far. `down`
// does not depend on it: it also finds everything by the namespace prefix and the marker file.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabOptions } from './topology.ts';

export const STATE_VERSION = 1;
/** Written first into a lab root; `down` deletes a root only when it carries this marker. */
export const ROOT_MARKER = '.flatnet-lab';

export interface NodeState {
  readonly name: string;
  readonly index: number;
  readonly netns: string;
  readonly segment: number;
  readonly underlayIPs: readonly string[];
  agentPid?: number;
}

export interface PodState {
  readonly name: string;
  readonly netns: string;
  readonly node: string;
  readonly containerID: string;
  readonly ifname: string;
  ips: string[];
}

export interface LabState {
  readonly version: number;
  readonly options: LabOptions;
  readonly createdAt: string;
  nodes: NodeState[];
  pods: PodState[];
  etcdPid?: number;
  /** The stand-in API server (store kubernetes). */
  kubeApiPid?: number;
  /** "building" until `up` finished; "ready" after. */
  phase: 'building' | 'ready';
}

export class LabStateError extends Error {
  override readonly name = 'LabStateError';
}

export function statePath(root: string): string {
  return join(root, 'state.json');
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Turns state.json's text into a LabState, or throws LabStateError naming what is wrong. */
export function parseState(text: string): LabState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new LabStateError('state.json is not JSON', { cause });
  }
  if (!isObj(raw) || raw['version'] !== STATE_VERSION) throw new LabStateError(`state.json is not a version ${STATE_VERSION} lab state`);
  const o = raw['options'];
  if (!isObj(o) || typeof o['prefix'] !== 'string' || typeof o['root'] !== 'string') throw new LabStateError('state.json: options missing');
  if (!Array.isArray(raw['nodes']) || !Array.isArray(raw['pods'])) throw new LabStateError('state.json: nodes or pods missing');
  for (const n of raw['nodes'] as unknown[]) {
    if (!isObj(n) || typeof n['name'] !== 'string' || typeof n['netns'] !== 'string' || !Array.isArray(n['underlayIPs'])) {
      throw new LabStateError('state.json: malformed node entry');
    }
  }
  for (const p of raw['pods'] as unknown[]) {
    if (!isObj(p) || typeof p['name'] !== 'string' || typeof p['netns'] !== 'string' || typeof p['node'] !== 'string' || typeof p['containerID'] !== 'string') {
      throw new LabStateError('state.json: malformed pod entry');
    }
  }
  return raw as unknown as LabState;
}

/** The state, undefined when there is no state file; throws LabStateError when it is unreadable. */
export function readState(root: string): LabState | undefined {
  let text: string;
  try {
    text = readFileSync(statePath(root), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new LabStateError(`cannot read ${statePath(root)}`, { cause: e });
  }
  return parseState(text);
}

export function writeState(state: LabState): void {
  const root = state.options.root;
  mkdirSync(root, { recursive: true });
  const tmp = join(root, `.state.${process.pid}.tmp`);
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n');
  renameSync(tmp, statePath(root));
}
