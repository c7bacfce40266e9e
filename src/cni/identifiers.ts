// Validation of the identifiers a runtime hands us, with libcni's rules (pkg/utils) and its error codes,
// so a bad value is refused exactly as the reference runtime library would refuse it.
import { CniError, ErrorCode } from './errors.ts';

const VALID_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
export const MAX_IFNAME_BYTES = 15;
// Container IDs are usually 64 hex characters; anything far beyond that is hostile, not a container.
const MAX_ID_LENGTH = 1024;

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
  if (Buffer.byteLength(name, 'utf8') > MAX_IFNAME_BYTES) bad('interface name is too long', 'interface name should be less than 16 characters');
  if (name === '.' || name === '..') bad('interface name is . or ..');
  // Also refuse control characters (NUL and friends), which the kernel would take or truncate silently.
  if (/[/:\s\u0000-\u001f\u007f]/u.test(name)) bad('interface name contains / or : or whitespace or a control character');
}

/** Renders a hostile value so it is safe to put in a message (no control bytes, bounded length). */
export function printable(s: string): string {
  const clipped = s.length > 120 ? `${s.slice(0, 120)}...(${s.length} chars)` : s;
  return JSON.stringify(clipped);
}
