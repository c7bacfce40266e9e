// Structured logs on stderr: one JSON object per line (or readable text), never on stdout.
export type Level = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  log(level: Level, msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(format: 'json' | 'text', base: Record<string, unknown>, write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const log = (level: Level, msg: string, fields: Record<string, unknown> = {}) => {
    const time = new Date().toISOString();
    if (format === 'json') {
      write(`${JSON.stringify({ time, level, msg, ...base, ...fields }, (_k, v: unknown) => (v instanceof Error ? v.message : v))}\n`);
    } else {
      const extra = Object.entries(fields).map(([k, v]) => `${k}=${v instanceof Error ? v.message : JSON.stringify(v)}`).join(' ');
      write(`${time} ${level.toUpperCase()} ${msg}${extra ? ` ${extra}` : ''}\n`);
    }
  };
  return {
    log,
    info: (m, f) => log('info', m, f),
    warn: (m, f) => log('warn', m, f),
    error: (m, f) => log('error', m, f),
  };
}
