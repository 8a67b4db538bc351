import { readFileSync } from 'node:fs';
import type { Admin, Kafka } from 'kafkajs';
import { validateConfig } from '../../src/config/load.js';
import type { RouterConfig } from '../../src/config/schema.js';
import type { ReadRecord } from '../../src/embedded/read-topic.js';
import { DlqHeaders, headerString } from '../../src/publish/dlq.js';
import { decodeTaggedNote } from '../../src/publish/tagged-note.js';

export interface FixtureNote {
  id: string;
  text: string;
}

export function fixtureNotes(): FixtureNote[] {
  return readFileSync(new URL('../fixtures/mtsamples/notes.jsonl', import.meta.url), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as FixtureNote);
}

let counter = 0;
/** Unique names per test so tests never see each other's records or offsets. */
export function uniqueNames(prefix: string): { input: string; output: string; dlq: string; group: string } {
  const tag = `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter++}`;
  return { input: `in-${tag}`, output: `out-${tag}`, dlq: `dlq-${tag}`, group: `group-${tag}` };
}

export function testConfig(brokers: string[], names: { input: string; output: string; dlq: string; group: string }, overrides: Record<string, Record<string, unknown>> = {}): RouterConfig {
  return validateConfig({
    kafka: { brokers, clientId: 'bioner-test', retries: 5, ...(overrides.kafka ?? {}) },
    input: { topic: names.input, groupId: names.group, sessionTimeoutMs: 10000, heartbeatIntervalMs: 1000, maxWaitTimeMs: 100, ...(overrides.input ?? {}) },
    output: { topic: names.output, dlqTopic: names.dlq, ...(overrides.output ?? {}) },
    processing: { ...(overrides.processing ?? {}) },
    encoder: { ...(overrides.encoder ?? {}) },
    logging: { level: 'silent' },
  });
}

export interface Accounting {
  /** input offset key "partition:offset" -> how many outputs / DLQ records name it */
  published: Map<string, number>;
  deadLettered: Map<string, { count: number; code: string }>;
}

/** Maps every output and DLQ record back to the input offset it came from. */
export function account(records: ReadRecord[], names: { output: string; dlq: string }): Accounting {
  const published = new Map<string, number>();
  const deadLettered = new Map<string, { count: number; code: string }>();
  for (const r of records) {
    if (r.topic === names.output && r.value !== null) {
      const rec = decodeTaggedNote(r.value);
      const k = `${rec.input.partition}:${rec.input.offset}`;
      published.set(k, (published.get(k) ?? 0) + 1);
    } else if (r.topic === names.dlq) {
      const k = `${headerString(r.headers, DlqHeaders.sourcePartition)}:${headerString(r.headers, DlqHeaders.sourceOffset)}`;
      const prev = deadLettered.get(k);
      deadLettered.set(k, { count: (prev?.count ?? 0) + 1, code: headerString(r.headers, DlqHeaders.errorCode) ?? '?' });
    }
  }
  return { published, deadLettered };
}

/** Every offset below the high watermark of each input partition. */
export async function inputOffsets(admin: Admin, topic: string): Promise<string[]> {
  const out: string[] = [];
  for (const p of await admin.fetchTopicOffsets(topic)) {
    for (let o = Number(p.low); o < Number(p.high); o++) out.push(`${p.partition}:${o}`);
  }
  return out.sort();
}

export async function committedCoversAll(admin: Admin, group: string, topic: string): Promise<boolean> {
  const ends = new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, p.high]));
  const [committed] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  // An empty partition has nothing to commit (-1 against a high watermark of 0).
  return committed.partitions.every((p) => p.offset === ends.get(p.partition) || (ends.get(p.partition) === '0' && Number(p.offset) < 0));
}

export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

export type { Kafka };
