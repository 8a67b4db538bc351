/**
 * JSON-lines logger. Callers pass ids, counts, lengths and timings only: note
 * text and patient ids are PHI and never belong in a log field. Fields named
 * like PHI are dropped here as a last line of defence.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';
export type LogFields = Record<string, string | number | boolean | null | undefined>;

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };
const PHI_FIELDS = new Set(['text', 'note_text', 'transcription', 'patient_id', 'patientId', 'value', 'payload', 'key']);

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export type LogSink = (line: string) => void;

export function createLogger(level: LogLevel = 'info', sink: LogSink = (l) => process.stderr.write(l + '\n'), base: LogFields = {}): Logger {
  const threshold = ORDER[level];
  const write = (lvl: Exclude<LogLevel, 'silent'>, msg: string, fields?: LogFields): void => {
    if (ORDER[lvl] < threshold) return;
    const record: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, msg };
    for (const src of [base, fields ?? {}]) {
      for (const [k, v] of Object.entries(src)) if (v !== undefined && !PHI_FIELDS.has(k)) record[k] = v;
    }
    try {
      sink(JSON.stringify(record));
    } catch {
      // A broken log sink must never take the pipeline down.
    }
  };
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    child: (f) => createLogger(level, sink, { ...base, ...f }),
  };
}

export const silentLogger: Logger = createLogger('silent');
