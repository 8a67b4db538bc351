import type { Kafka } from 'kafkajs';
import { DlqHeaders, headerString } from '../publish/dlq.js';
import { decodeTaggedNote } from '../publish/tagged-note.js';
import { readTopics, type ReadRecord } from './read-topic.js';

/** What became of every input offset, as read back from the output and DLQ topics. */
export interface OracleReport {
  /** Input offsets (low..high of every partition). */
  total: number;
  /** Distinct input offsets with at least one output record. */
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

/** Pure accounting over records already read (input offsets as "partition:offset"). */
export function accountOffsets(inputOffsets: readonly string[], records: readonly ReadRecord[], topics: Omit<OracleTopics, 'input'>): OracleReport {
  const published = new Map<string, number>();
  const dead = new Map<string, { count: number; code: string }>();
  for (const r of records) {
    if (r.topic === topics.output && r.value !== null) {
      const rec = decodeTaggedNote(r.value);
      const k = `${rec.input.partition}:${rec.input.offset}`;
      published.set(k, (published.get(k) ?? 0) + 1);
    } else if (r.topic === topics.dlq) {
      const k = `${headerString(r.headers, DlqHeaders.sourcePartition) ?? '?'}:${headerString(r.headers, DlqHeaders.sourceOffset) ?? '?'}`;
      const prev = dead.get(k);
      dead.set(k, { count: (prev?.count ?? 0) + 1, code: prev?.code ?? headerString(r.headers, DlqHeaders.errorCode) ?? 'UNKNOWN' });
    }
  }
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
export async function listInputOffsets(kafka: Kafka, topic: string): Promise<string[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const out: string[] = [];
    for (const p of await admin.fetchTopicOffsets(topic)) {
      for (let o = Number(p.low); o < Number(p.high); o++) out.push(`${p.partition}:${o}`);
    }
    return out.sort();
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
  const records = await readTopics(kafka, [topics.output, topics.dlq], (rs) => accountOffsets(offsets, rs, topics).missing.length === 0, timeoutMs);
  return accountOffsets(offsets, records, topics);
}
