import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { InMemorySpanExporter } from '@opentelemetry/sdk-trace';
import { createProcessor, loadEncoder, loadLlm } from '../../src/pipeline/compose.js';
import { DEMO_NEXT_STEPS, demoCommand, routingSummary } from '../../src/cli/demo.js';
import { validateConfig } from '../../src/config/load.js';
import type { RouterConfig } from '../../src/config/schema.js';
import { setupTracing } from '../../src/telemetry/tracing.js';

const TEXT = 'The patient developed acute renal failure after cisplatin. She was treated with furosemide for hypertension.';
const note = (id: string) => ({ noteId: id, text: TEXT, source: null, latencyBudgetMs: null, patientId: null, metadata: null });

/**
 * routingSummary over the spans a real NoteProcessor records (real encoder;
 * the LLM route is the real `openai` adapter pointed at a closed port, so it
 * fails and falls back). Dead-lettered counts come from the service's process
 * spans: the demo test below covers them.
 */
test('routingSummary counts routes, tagger calls and fallbacks from real spans', async () => {
  const config: RouterConfig = validateConfig({ logging: { level: 'silent' } });
  const exporter = new InMemorySpanExporter();
  // Its own registration, shut down before the demo registers its one.
  const tracing = setupTracing(config.telemetry, { exporter });
  const encoder = await loadEncoder(config.encoder);
  try {
    const encoderOnly = createProcessor(config, encoder);
    await encoderOnly.process(note('s-1'), { topic: 'notes', partition: 0, offset: '0' });
    await encoderOnly.process(note('s-2'), { topic: 'notes', partition: 0, offset: '1' });

    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const llmConfig: RouterConfig = {
      ...config,
      routing: { ...config.routing, policy: 'llm' },
      llm: { ...config.llm, adapter: 'openai', baseUrl: `http://127.0.0.1:${port}`, retries: 0 },
    };
    const llm = await loadLlm(llmConfig);
    assert.ok(llm !== undefined);
    try {
      const out = await createProcessor(llmConfig, encoder, {}, llm).process(note('s-3'), { topic: 'notes', partition: 0, offset: '2' });
      assert.ok(out.routing.reasons.includes('llm_fallback:LLM_UNAVAILABLE'), out.routing.reasons.join(','));
    } finally {
      await llm.close();
    }
    await tracing.forceFlush();
    const spans = exporter.getFinishedSpans();
    const lines = routingSummary(spans, 'notes');
    assert.equal(lines.length, 4);
    assert.equal(lines[0], `routing from traces (${spans.length} spans, policy encoder,llm):`);
    // Two notes stayed on the encoder; the LLM note is still `llm` as chosen, though its call failed.
    assert.match(lines[1], /^ {2}notes by route chosen: encoder 2 \(mean est\. gain [+-]\d+\.\d{4}\), llm 1 \(mean est\. gain [+-]\d+\.\d{4}\)$/);
    assert.match(lines[2], /^ {2}tagger calls: encoder 2 \(mean \d+\.\d ms\), llm 1 \(mean \d+\.\d ms, 1 failed\), encoder_fallback 1 \(mean \d+\.\d ms\)$/);
    assert.equal(lines[3], '  LLM fallbacks: LLM_UNAVAILABLE 1; dead-lettered: none');
    // The means are the spans' own tagger times.
    const encoderMs = spans.filter((s) => s.name === 'tag encoder').map((s) => Number(s.attributes['bioner.tagger.ms']));
    assert.equal(encoderMs.length, 2);
    assert.ok(lines[2].includes(`encoder 2 (mean ${((encoderMs[0] + encoderMs[1]) / 2).toFixed(1)} ms)`), lines[2]);
    assert.deepEqual(routingSummary([], 'notes'), [
      'routing from traces (0 spans, policy -):',
      '  notes by route chosen: none',
      '  tagger calls: none',
      '  LLM fallbacks: none; dead-lettered: none',
    ]);
  } finally {
    await encoder.close();
    await tracing.shutdown();
  }
});

/**
 * The demo in-process (its own mock cluster, real encoder, real service): its
 * routing summary from spans and its metrics summary from the Prometheus
 * exposition must agree with each other and with the JSON line.
 */
test('demo: the routing summary from traces and the metrics summary agree with the output', async () => {
  let out = '';
  const progress: string[] = [];
  const summary = await demoCommand({ notes: 3, format: 'json', write: (t) => (out += t), progress: (l) => progress.push(l) });
  const lines = out.trimEnd().split('\n');
  assert.deepEqual(JSON.parse(lines.at(-1) ?? ''), summary, 'the JSON summary stays the last line');
  assert.equal(summary.published, 3);
  assert.equal(summary.dlq, 5);
  const codes = ['DECODE_FAILED', 'TEXT_MISSING', 'TEXT_EMPTY', 'SCHEMA_MISMATCH', 'INVALID_UTF8'];

  const traces = lines.findIndex((l) => l.startsWith('routing from traces ('));
  assert.ok(traces >= 0, out);
  assert.match(lines[traces + 1], /^ {2}notes by route chosen: encoder 3 \(/);
  assert.match(lines[traces + 2], /^ {2}tagger calls: encoder 3 \(mean \d+\.\d ms\)$/);
  for (const code of codes) assert.ok(lines[traces + 3].includes(`${code} 1`), lines[traces + 3]);

  const metrics = lines.findIndex((l) => /^metrics recorded \(\d+ series in \d+ families/.test(l));
  assert.ok(metrics > traces, out);
  const notes = lines[metrics + 1];
  assert.ok(notes.includes('published 3') && notes.includes('dead_lettered 5') && notes.endsWith('(received 8)'), notes);
  assert.match(lines[metrics + 2], /^ {2}sentences by route: encoder \d+$/);
  assert.match(lines[metrics + 3], /^ {2}tagger calls: encoder 3 \(mean \d+\.\d ms\)$/);
  // Both summaries read the same tagger times (span attribute and histogram observation of each call).
  assert.equal(/mean (\d+\.\d) ms/.exec(lines[metrics + 3])?.[1], /mean (\d+\.\d) ms/.exec(lines[traces + 2])?.[1]);
  for (const code of codes) assert.match(lines[metrics + 4], new RegExp(`${code}@(decode|validate) 1`));
  assert.match(lines[metrics + 4], /LLM fallbacks: none; budget overruns: \d+$/);

  // Progress went to its own stream, in order, with the closing hints last; none of it reached the table's stream.
  const steps = [
    'demo: starting embedded Kafka',
    'demo: producing 3 notes and 5 malformed records',
    'demo: loading models',
    'demo: tagging 3 notes: 0/3',
    'demo: tagging 3 notes: 3/3',
    'what to try next:',
  ];
  const at = steps.map((s) => progress.findIndex((l) => l.startsWith(s)));
  assert.ok(
    at.every((i, k) => i >= 0 && (k === 0 || i > at[k - 1])),
    progress.join('\n'),
  );
  assert.deepEqual(progress.slice(-DEMO_NEXT_STEPS.length), [...DEMO_NEXT_STEPS]);
  assert.ok(!out.includes('demo: '), 'progress is not mixed into the output');
});

/** A few words from each note the demo cycles through and from its malformed records: none may show in its progress. */
async function noteSnippets(): Promise<string[]> {
  const notes = (await readFile(new URL('../../test/fixtures/mtsamples/notes.jsonl', import.meta.url), 'utf8'))
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { text: string }).text);
  const words = notes.flatMap((t) => [t.slice(0, 24), t.slice(Math.floor(t.length / 2), Math.floor(t.length / 2) + 24)]).filter((s) => s.trim().length >= 12);
  return [...words, 'unterminated', 'fever'];
}

test('demo from the CLI: progress and the closing hints on stderr (no note text), the JSON summary still the last stdout line', async () => {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'demo', '--notes', '3'], {
    cwd: root,
    maxBuffer: 16 * 1024 * 1024,
  });
  const last = JSON.parse(stdout.trimEnd().split('\n').at(-1) ?? '') as Record<string, number>;
  assert.equal(last.published, 3);
  const err = stderr.trimEnd().split('\n');
  for (const step of ['demo: starting embedded Kafka (3 brokers)...', 'demo: loading models...', 'demo: tagging 3 notes: 3/3'])
    assert.ok(err.includes(step), `${step}\n${stderr}`);
  // It ends with what to try next: tagging a file, the real-Kafka run, and where the README explains the output.
  const next = err.slice(err.indexOf('what to try next:'));
  assert.ok(err.includes('what to try next:') && next.length === DEMO_NEXT_STEPS.length, stderr);
  assert.ok(
    next.some((l) => /^ {2}bioner-router tag FILE\s/.test(l)),
    stderr,
  );
  assert.ok(
    next.some((l) => /^ {2}bioner-router run --config deploy\/router\.example\.yaml\s.*real Kafka/.test(l)),
    stderr,
  );
  assert.ok(
    next.some((l) => /README\.md/.test(l)),
    stderr,
  );
  assert.equal(err.at(-1), DEMO_NEXT_STEPS.at(-1));
  for (const snippet of await noteSnippets()) assert.ok(!stderr.includes(snippet), 'no note text on stderr');
});
