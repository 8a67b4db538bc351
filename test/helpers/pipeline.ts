import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Admin, Kafka } from 'kafkajs';
import { validateConfig } from '../../src/config/load.js';
import type { RouterConfig } from '../../src/config/schema.js';
import type { ReadRecord } from '../../src/embedded/read-topic.js';
import { tallyRecords, topicOffsets, type OffsetTally } from '../../src/embedded/oracle.js';
import { encodeNote } from '../../src/ingest/decode.js';
import { createProducer } from '../../src/kafka/index.js';

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

export function testConfig(
  brokers: string[],
  names: { input: string; output: string; dlq: string; group: string },
  overrides: Record<string, Record<string, unknown>> = {},
): RouterConfig {
  return validateConfig({
    kafka: { brokers, clientId: 'bioner-test', retries: 5, ...(overrides.kafka ?? {}) },
    input: { topic: names.input, groupId: names.group, sessionTimeoutMs: 10000, heartbeatIntervalMs: 1000, maxWaitTimeMs: 100, ...(overrides.input ?? {}) },
    output: { topic: names.output, dlqTopic: names.dlq, ...(overrides.output ?? {}) },
    processing: { ...(overrides.processing ?? {}) },
    encoder: { ...(overrides.encoder ?? {}) },
    ...(overrides.routing === undefined ? {} : { routing: overrides.routing }),
    // The one-pass decoder classifier stands in for the LLM route in pipeline tests: they test routing, budgets and
    // delivery, and it is 5-10x faster than the generative decoder (tested on its own in generative.test.ts).
    llm: { modelDir: 'models/bc5cdr-decoder-classifier', ...(overrides.llm ?? {}) },
    ...(overrides.schemaRegistry === undefined ? {} : { schemaRegistry: overrides.schemaRegistry }),
    logging: { level: 'silent' },
  });
}

/** Output and DLQ records per input offset (the accounting oracle's tally). */
export const account = (records: ReadRecord[], names: { output: string; dlq: string }): OffsetTally => tallyRecords(records, names);

/** Every offset below the high watermark of each input partition. */
export const inputOffsets = topicOffsets;

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

export interface CliProcess {
  child: ChildProcess;
  /** stdout + stderr so far (JSON log lines). */
  output: () => string;
  /** Exit code (null when killed by a signal). */
  exited: Promise<number | null>;
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Runs `bioner-router run --config FILE` as a child process, the way it runs in
 * production (signals, exit codes), from a config object written as YAML (JSON
 * is YAML) into `dir`.
 */
export async function startRouterCli(config: Record<string, unknown>, dir: string, file = 'router.yaml'): Promise<CliProcess> {
  const path = join(dir, file);
  await writeFile(path, JSON.stringify(config, null, 2));
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'run', '--config', path], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, output: () => out, exited };
}

export interface FixtureProduceOptions {
  /** Prepended to each note's text and used as its patient id (PHI-leak tests look for it). */
  marker?: string;
  /** latency_budget_ms of note i (default none). */
  budget?: (i: number) => number | null;
  /** Paced arrivals: one note per send, this many ms apart (default: all in one send). */
  intervalMs?: number;
}

/** Produces `count` fixture notes (ids `<keyPrefix>-<i>`, cycling through the fixtures) as JSON to `topic`. */
export async function produceFixtureNotes(kafka: Kafka, topic: string, keyPrefix: string, count: number, options: FixtureProduceOptions = {}): Promise<void> {
  const notes = fixtureNotes();
  const producer = createProducer(kafka);
  await producer.connect();
  const messages = Array.from({ length: count }, (_, i) => {
    const noteId = `${keyPrefix}-${i}`;
    const text = options.marker === undefined ? notes[i % notes.length].text : `${options.marker} ${notes[i % notes.length].text}`;
    const patientId = options.marker === undefined ? null : `${options.marker}-patient`;
    return { key: noteId, value: encodeNote({ noteId, text, source: null, latencyBudgetMs: options.budget?.(i) ?? null, patientId, metadata: null }, 'json') };
  });
  try {
    if (options.intervalMs === undefined) await producer.send({ topic, messages });
    else {
      for (const [i, message] of messages.entries()) {
        if (i > 0) await new Promise((r) => setTimeout(r, options.intervalMs));
        await producer.send({ topic, messages: [message] });
      }
    }
  } finally {
    await producer.disconnect();
  }
}
