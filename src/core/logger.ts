import { pino, type Logger } from 'pino';

export type { Logger };

/** Structured logs, one line per event; callers add job and step ids as bindings. */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino({ level: options.level ?? process.env['MAMORI_LOG_LEVEL'] ?? 'info', name: options.name ?? 'mamori' });
}
