import type { RecordPosition } from '../ingest/note.js';
import type { RoutingRecord } from '../route/record.js';
import type { EntitySpan } from '../types.js';

export interface NoteTimings {
  textMs: number;
  routeMs: number;
  encoderMs: number;
  llmMs: number;
  /** From receipt to the end of tagging. */
  totalMs: number;
}

/**
 * What tagging one note produced, in the pipeline's own terms (spans in UTF-16
 * offsets into the note text, camelCase fields). The processor returns it;
 * publish/ turns it into the Avro TaggedNote record. It holds no note text.
 */
export interface NoteOutcome {
  noteId: string;
  source: string | null;
  metadata: Record<string, string> | null;
  position: RecordPosition;
  model: { id: string; version: string };
  spans: EntitySpan[];
  routing: RoutingRecord;
  timings: NoteTimings;
}
