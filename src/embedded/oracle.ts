import type { Admin, Kafka } from 'kafkajs';
import { DlqHeaders, headerString } from '../publish/dlq.js';
import { decodeTaggedNote, SourceHeaders } from '../publish/tagged-note.js';
import { readTopics, type ReadRecord } from './read-topic.js';

/** What became of every input offset, as read back from the output and DLQ topics. */
export interface OracleReport {
  /** Input offsets (low..high of every partition). */
  total: number;
  /** Distinct input offsets with at least one output record (a propagated tombstone counts). */
  published: number;
  /** Distinct input offsets with at least one DLQ record (and no output record). */
  deadLettered: number;
  /** "partition:offset" of input offsets with neither, sorted. */
  missing: string[];
  /** Extra copies: output + DLQ records beyond the first per input offset (at-least-once replays). */
  duplicates: number;
  /** DLQ error code -> distinct input offsets dead-lettered with it. */
  byCode: Record<string, number>;
}

export interface OracleTopics {
  input: string;
  output: string;
  dlq: string;
}

/** Output and DLQ records per input offset ("partition:offset"). */
export interface OffsetTally {
  published: Map<string, number>;
  deadLettered: Map<string, { count: number; code: string }>;
}

/** Maps every output and DLQ record back to the input offset it came from. */
export function tallyRecords(records: readonly ReadRecord[], topics: Omit<OracleTopics, 'input'>): OffsetTally {
  const published = new Map<string, number>();
  const deadLettered = new Map<string, { count: number; code: string }>();
  for (const r of records) {
    const k = sourceOffset(r, topics);
    if (k === undefined) continue;
    if (r.topic === topics.output) {
      published.set(k, (published.get(k) ?? 0) + 1);
    } else {
      const prev = deadLettered.get(k);
      deadLettered.set(k, { count: (prev?.count ?? 0) + 1, code: prev?.code ?? headerString(r.headers, DlqHeaders.errorCode) ?? 'UNKNOWN' });
    }
  }
  return { published, deadLettered };
}

/** The input offset ("partition:offset") an output or DLQ record stands for; undefined for other records. */
function sourceOffset(r: ReadRecord, topics: Omit<OracleTopics, 'input'>): string | undefined {
  if (r.topic === topics.output && r.value !== null) {
    const rec = decodeTaggedNote(r.value);
    return `${rec.input.partition}:${rec.input.offset}`;
  }
  // A propagated input tombstone: a null value whose headers name the input record it stands for.
  if (r.topic === topics.output) {
    const partition = headerString(r.headers, SourceHeaders.partition);
    const offset = headerString(r.headers, SourceHeaders.offset);
    return partition === undefined || offset === undefined ? undefined : `${partition}:${offset}`;
  }
  if (r.topic === topics.dlq) return `${headerString(r.headers, DlqHeaders.sourcePartition) ?? '?'}:${headerString(r.headers, DlqHeaders.sourceOffset) ?? '?'}`;
  return undefined;
}

/** Pure accounting over records already read (input offsets as "partition:offset"). */
export function accountOffsets(inputOffsets: readonly string[], records: readonly ReadRecord[], topics: Omit<OracleTopics, 'input'>): OracleReport {
  const { published, deadLettered: dead } = tallyRecords(records, topics);
  const report: OracleReport = { total: inputOffsets.length, published: 0, deadLettered: 0, missing: [], duplicates: 0, byCode: {} };
  for (const o of inputOffsets) {
    const p = published.get(o) ?? 0;
    const d = dead.get(o);
    const copies = p + (d?.count ?? 0);
    if (copies === 0) {
      report.missing.push(o);
      continue;
    }
    report.duplicates += copies - 1;
    if (p > 0) report.published++;
    else if (d !== undefined) {
      report.deadLettered++;
      report.byCode[d.code] = (report.byCode[d.code] ?? 0) + 1;
    }
  }
  report.missing.sort();
  return report;
}

/** Every input offset from each partition's low to high watermark, as "partition:offset". */
export async function topicOffsets(admin: Admin, topic: string): Promise<string[]> {
  const out: string[] = [];
  for (const p of await admin.fetchTopicOffsets(topic)) {
    for (let o = Number(p.low); o < Number(p.high); o++) out.push(`${p.partition}:${o}`);
  }
  return out.sort();
}

export async function listInputOffsets(kafka: Kafka, topic: string): Promise<string[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await topicOffsets(admin, topic);
  } finally {
    await admin.disconnect();
  }
}

/**
 * Reads the input topic's offsets and the output and DLQ topics, and reports
 * every input offset as published, dead-lettered or missing. Waits (up to
 * `timeoutMs`) until nothing is missing, so a caller can run it right after
 * the router finished; whatever is still missing then is reported.
 */
export async function runOracle(kafka: Kafka, topics: OracleTopics, timeoutMs = 30_000): Promise<OracleReport> {
  const offsets = await listInputOffsets(kafka, topics.input);
  const waiting = new Set(offsets);
  let seen = 0;
  const records = await readTopics(
    kafka,
    [topics.output, topics.dlq],
    (rs) => {
      // Incremental: each record is decoded once here, however long the run.
      for (; seen < rs.length; seen++) {
        const k = sourceOffset(rs[seen], topics);
        if (k !== undefined) waiting.delete(k);
      }
      return waiting.size === 0;
    },
    timeoutMs,
  );
  return accountOffsets(offsets, records, topics);
}
