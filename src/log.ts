import type { Config } from './config.js';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const rank: Record<Config['logLevel'], number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 99 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** Whether a line at `level` would be written, so hot paths can skip building it. Absent: assume yes. */
  enabled?(level: Level): boolean;
}

/** One JSON object per line on stderr, so stdout stays free for CLI output. */
export function createLogger(level: Config['logLevel'], sink: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const min = rank[level];
  const emit = (lvl: Level, msg: string, fields?: Record<string, unknown>) => {
    if (rank[lvl] < min) return;
    sink(`${JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...fields })}\n`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    enabled: (lvl) => rank[lvl] >= min,
  };
}

export const silentLogger: Logger = createLogger('silent');
