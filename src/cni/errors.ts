// CNI error codes (SPEC "Error" section) and the one error type the dispatcher turns into error JSON.
// Everything else that escapes a verb is unexpected and becomes an internal error there.

export const ErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IOFailure: 5,
  DecodingFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  NotAvailable: 50,
  LimitedConnectivity: 51,
  // flatnet's own codes (>= 100)
  AddressUnavailable: 100, // requested address taken / outside the ranges / pool exhausted
  DuplicateAttachment: 101, // (containerID, ifname) already holds an address
  InterfaceExists: 102, // CNI_IFNAME already present in the container
  KernelOperation: 103, // a netlink operation (via iproute2) failed
  DelegateFailed: 104, // the delegated IPAM plugin failed
  CheckFailed: 105, // CHECK found a difference between prevResult and the kernel
  LauncherFailed: 106, // the executable's native launcher could not start Node (native/launcher.c)
  Internal: 999,
} as const;
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export class CniError extends Error {
  override readonly name = 'CniError';
  constructor(
    readonly code: number,
    msg: string,
    readonly details?: string,
    options?: { cause?: unknown },
  ) {
    super(msg, options);
  }
}

export function invalidConfig(msg: string, details?: string): CniError {
  return new CniError(ErrorCode.InvalidConfig, msg, details);
}

export function unsupportedField(key: string, value: unknown): CniError {
  return new CniError(ErrorCode.UnsupportedField, `unsupported field "${key}"`, `value: ${safeJson(value)}`);
}

function safeJson(v: unknown): string {
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 200 ? `${s.slice(0, 200)}...` : s;
  } catch {
    return String(v);
  }
}

export interface ErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export function errorJson(cniVersion: string, e: CniError): ErrorJson {
  return { cniVersion, code: e.code, msg: e.message, ...(e.details !== undefined ? { details: e.details } : {}) };
}
