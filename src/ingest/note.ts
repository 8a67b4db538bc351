/** A validated clinical note as the pipeline sees it. Holds PHI (text, patientId). */
export interface ClinicalNote {
  noteId: string;
  text: string;
  source: string | null;
  latencyBudgetMs: number | null;
  patientId: string | null;
  metadata: Record<string, string> | null;
}

/** Where a record came from; travels with the note to the output and DLQ. */
export interface RecordPosition {
  topic: string;
  partition: number;
  offset: string;
}
