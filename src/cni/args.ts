// CNI_ARGS ("K=V;K=V"), parsed with libcni's rules: every pair needs exactly one "=", and unknown
// keys are an error unless IgnoreUnknown is set (Kubernetes runtimes always set it).
import { CniError, ErrorCode } from './errors.ts';

/** Keys flatnet understands; K8S_* are informational and accepted without IgnoreUnknown. */
const KNOWN_KEYS = new Set(['IgnoreUnknown', 'IP', 'MAC', 'K8S_POD_NAMESPACE', 'K8S_POD_NAME', 'K8S_POD_INFRA_CONTAINER_ID', 'K8S_POD_UID']);

/** "aa:bb:cc:dd:ee:ff", any case: what CNI_ARGS MAC=, args.cni.mac and runtimeConfig.mac must look like. */
export const MAC_ADDRESS = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

export interface CniArgs {
  readonly ips: readonly string[];
  readonly mac?: string;
  readonly podNamespace?: string;
  readonly podName?: string;
}

export function parseCniArgs(text: string): CniArgs {
  if (text === '') return { ips: [] };
  const pairs = new Map<string, string>();
  for (const item of text.split(';')) {
    if (item === '') continue;
    const kv = item.split('=');
    if (kv.length !== 2 || kv[0] === '') {
      throw new CniError(ErrorCode.InvalidEnvironment, 'CNI_ARGS: invalid pair', JSON.stringify(item.slice(0, 200)));
    }
    pairs.set(kv[0]!, kv[1]!);
  }
  const ignoreUnknown = /^(1|true)$/i.test(pairs.get('IgnoreUnknown') ?? '');
  if (!ignoreUnknown) {
    for (const k of pairs.keys()) {
      if (!KNOWN_KEYS.has(k)) throw new CniError(ErrorCode.InvalidEnvironment, `CNI_ARGS: unknown args "${k.slice(0, 100)}"`);
    }
  }
  const ip = pairs.get('IP');
  const mac = pairs.get('MAC');
  // Checked here, with the rest of CNI_ARGS, so a bad MAC is refused before ADD reserves anything.
  if (mac && !MAC_ADDRESS.test(mac)) {
    throw new CniError(ErrorCode.InvalidEnvironment, 'CNI_ARGS: MAC is not a MAC address', JSON.stringify(mac.slice(0, 100)));
  }
  const ns = pairs.get('K8S_POD_NAMESPACE');
  const pod = pairs.get('K8S_POD_NAME');
  return {
    // podman sends several addresses comma-separated (one per family) in IP=.
    ips: ip ? ip.split(',').filter((s) => s !== '') : [],
    ...(mac ? { mac } : {}),
    ...(ns ? { podNamespace: ns } : {}),
    ...(pod ? { podName: pod } : {}),
  };
}
