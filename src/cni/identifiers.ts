// Validation of the identifiers a runtime hands us, with libcni's rules (pkg/utils) and its error codes,
// so a bad value is refused exactly as the reference runtime library would refuse it.
import { CniError, ErrorCode } from './errors.ts';
import { utf8Length } from '../net/utf8.ts';

const VALID_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
export const MAX_IFNAME_BYTES = 15;
// Container IDs are 64 hex characters in every runtime. The bound is also what the host veth's alias can
// carry: IFALIASZ is 256 bytes with the NUL, and the alias is "flatnet:<id>/<ifname>@<mac>" (42 bytes besides
// the id with a 15-byte ifname), so a longer id would pass here and then fail in the kernel half-way through ADD.
const MAX_ID_LENGTH = 200;

export function validateContainerID(id: string): void {
  if (id === '') throw new CniError(ErrorCode.UnknownContainer, 'missing containerID');
  if (id.length > MAX_ID_LENGTH || !VALID_NAME.test(id)) {
    throw new CniError(ErrorCode.InvalidEnvironment, 'invalid characters in CNI_CONTAINERID', printable(id));
  }
}

export function validateNetworkName(name: string): void {
  if (name === '') throw new CniError(ErrorCode.InvalidConfig, 'missing network name');
  if (name.length > 253 || !VALID_NAME.test(name)) {
    throw new CniError(ErrorCode.InvalidConfig, 'invalid characters found in network name "name"', printable(name));
  }
}

export function validateInterfaceName(name: string): void {
  const bad = (why: string, details?: string): never => {
    throw new CniError(ErrorCode.InvalidEnvironment, `CNI_IFNAME: ${why}`, details ?? printable(name));
  };
  if (name === '') bad('interface name is empty');
  if (utf8Length(name) > MAX_IFNAME_BYTES) bad('interface name is too long', 'interface name should be less than 16 characters');
  if (name === '.' || name === '..') bad('interface name is . or ..');
  // Also refuse control characters (NUL and friends), which the kernel would take or truncate silently, and
  // what iproute2's batch parser (which carries every name to the kernel) would rewrite: "#" starts a comment
  // that drops the rest of the line, and a quote opens a quoted word ('"x"' would become the interface "x").
  // U+FFFD is what Node makes of bytes that are not UTF-8: the kernel would get a name the runtime never sent.
  if (/[/:\s\u0000-\u001f\u007f#"'\uFFFD]/u.test(name)) bad('interface name contains / or : or whitespace or a control character or # or a quote or bytes that are not UTF-8');
}

/** Renders a hostile value so it is safe to put in a message (no control bytes, bounded length). */
export function printable(s: string): string {
  const clipped = s.length > 120 ? `${s.slice(0, 120)}...(${s.length} chars)` : s;
  return JSON.stringify(clipped);
}
