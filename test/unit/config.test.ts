import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { applyEnvironment, environmentOverrides, loadConfig, validateConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

function expectField(fn: () => unknown, field: string, pattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.field, field);
    assert.equal(err.code, 'CONFIG_INVALID');
    assert.equal(err.retriable, false);
    assert.ok(err.message.includes(field), `message names the field: ${err.message}`);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

test('defaults fill an empty config', () => {
  const c = validateConfig({});
  assert.equal(c.input.topic, 'clinical-notes');
  assert.equal(c.input.format, 'json');
  assert.equal(c.output.dlqTopic, 'clinical-notes.dlq');
  assert.equal(c.encoder.modelDir, 'models/bc5cdr-encoder');
  assert.equal(c.processing.concurrency, 8);
});

test('type errors name the field', () => {
  expectField(() => validateConfig({ processing: { concurrency: 0 } }), 'processing.concurrency');
  expectField(() => validateConfig({ input: { format: 'xml' } }), 'input.format', /json/);
  expectField(() => validateConfig({ kafka: { brokers: ['no-port'] } }), 'kafka.brokers.0', /host:port/);
});

test('unknown options are rejected with their path', () => {
  expectField(() => validateConfig({ input: { topik: 'x' } }), 'input.topik', /unknown option/);
  expectField(() => validateConfig({ bogus: {} }), 'bogus');
});

test('cross-field rules name the field and the fix', () => {
  expectField(() => validateConfig({ input: { heartbeatIntervalMs: 20000, sessionTimeoutMs: 30000 } }), 'input.heartbeatIntervalMs', /third/);
  expectField(() => validateConfig({ processing: { concurrency: 100, maxInFlight: 10 } }), 'processing.concurrency');
  expectField(() => validateConfig({ output: { topic: 'clinical-notes' } }), 'output.topic');
  expectField(() => validateConfig({ routing: { defaultBudgetMs: 60000 } }), 'routing.defaultBudgetMs', /noteTimeoutMs/);
});

test('environment overrides map every leaf and parse types', () => {
  const vars = environmentOverrides().map((o) => o.variable);
  assert.ok(vars.includes('BIONER_KAFKA_BROKERS'));
  assert.ok(vars.includes('BIONER_INPUT_MAX_NOTE_BYTES'));
  assert.ok(vars.includes('BIONER_ENCODER_MODEL_DIR'));
  const raw = applyEnvironment(
    { input: { topic: 'from-file' } },
    {
      BIONER_KAFKA_BROKERS: 'a:9092, b:9093',
      BIONER_INPUT_MAX_NOTE_BYTES: '2048',
      BIONER_INPUT_FROM_BEGINNING: 'false',
      BIONER_OUTPUT_TOPIC: 'out',
    },
  );
  const c = validateConfig(raw);
  assert.deepEqual(c.kafka.brokers, ['a:9092', 'b:9093']);
  assert.equal(c.input.maxNoteBytes, 2048);
  assert.equal(c.input.fromBeginning, false);
  assert.equal(c.input.topic, 'from-file');
  assert.equal(c.output.topic, 'out');
  expectField(() => validateConfig(applyEnvironment({}, { BIONER_PROCESSING_CONCURRENCY: 'many' })), 'processing.concurrency');
});

test('loadConfig reads YAML and JSON files and reports bad files', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bioner-config-'));
  const yamlFile = join(dir, 'c.yaml');
  await writeFile(yamlFile, 'kafka:\n  brokers: [k1:9092]\ninput:\n  format: avro\n');
  const c = await loadConfig(yamlFile, {});
  assert.deepEqual(c.kafka.brokers, ['k1:9092']);
  assert.equal(c.input.format, 'avro');
  const jsonFile = join(dir, 'c.json');
  await writeFile(jsonFile, JSON.stringify({ output: { acks: 1 } }));
  assert.equal((await loadConfig(jsonFile, {})).output.acks, 1);
  await writeFile(jsonFile, '{ not json');
  await assert.rejects(loadConfig(jsonFile, {}), (e: unknown) => e instanceof ConfigError && e.field === '(file)');
  await assert.rejects(loadConfig(join(dir, 'missing.yaml'), {}), (e: unknown) => e instanceof ConfigError && /ENOENT/.test(e.message));
  await writeFile(yamlFile, 'input:\n  maxNoteBytes: -5\n');
  await assert.rejects(loadConfig(yamlFile, {}), (e: unknown) => e instanceof ConfigError && e.field === 'input.maxNoteBytes');
});

test('the example config in deploy/ passes validation', async () => {
  const c = await loadConfig(new URL('../../deploy/router.example.yaml', import.meta.url).pathname, {});
  assert.equal(c.input.format, 'avro');
  assert.equal(c.kafka.brokers.length, 3);
});

test('settings that would break delivery guarantees are refused', () => {
  expectField(() => validateConfig({ output: { acks: 0 } }), 'output.acks');
  expectField(() => validateConfig({ kafka: { brokers: ['k:70000'] } }), 'kafka.brokers.0', /65535/);
  expectField(() => validateConfig({ processing: { maxAttempts: 50 } }), 'processing.maxAttempts');
  expectField(() => validateConfig({ shutdown: { drainTimeoutMs: 1000 } }), 'shutdown.drainTimeoutMs', /noteTimeoutMs/);
  expectField(() => validateConfig({ input: { maxWaitTimeMs: 40000 } }), 'input.maxWaitTimeMs');
});

/** The problems a ConfigError lists: one `config field "..."` line each. */
function problemLines(fn: () => unknown): string[] {
  let lines: string[] = [];
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'CONFIG_INVALID');
    lines = err.message.split('\n');
    for (const line of lines) assert.match(line, /^config field "[^"]+": \S/);
    return true;
  });
  return lines;
}

test('every problem is listed at once, one line each, the first one as the field', () => {
  // A type error, a misspelt option and a cross-field rule: three lines.
  const raw = { processing: { concurrency: 0 }, input: { topik: 'x' }, output: { topic: 'clinical-notes' } };
  const lines = problemLines(() => validateConfig(raw));
  assert.equal(lines.length, 3, lines.join('\n'));
  // Schema problems come in the schema's order (input before processing), cross-field ones after them.
  assert.match(lines[0], /^config field "input\.topik": unknown option/);
  assert.match(lines[1], /^config field "processing\.concurrency": /);
  assert.match(lines[2], /^config field "output\.topic": .*input\.topic/);
  // `field` stays the first problem's, as callers matching one field expect.
  expectField(() => validateConfig(raw), 'input.topik');

  // Only cross-field rules broken: all of them, in rule order.
  const cross = problemLines(() =>
    validateConfig({ processing: { concurrency: 100, maxInFlight: 10 }, routing: { defaultBudgetMs: 60000 }, output: { dlqTopic: 'tagged-notes' } }),
  );
  assert.deepEqual(
    cross.map((l) => /"([^"]+)"/.exec(l)?.[1]),
    ['processing.concurrency', 'routing.defaultBudgetMs', 'output.dlqTopic'],
  );

  // Several unknown keys of one object are each named.
  assert.deepEqual(
    problemLines(() => validateConfig({ bogus: {}, other: 1 })).map((l) => /"([^"]+)"/.exec(l)?.[1]),
    ['bogus', 'other'],
  );
});

test('a rule over a refused option is not judged on its default; one line per field', () => {
  // noteTimeoutMs is refused, so "defaultBudgetMs must not exceed noteTimeoutMs (20000)" would judge the default: left out.
  const lines = problemLines(() =>
    validateConfig({ processing: { noteTimeoutMs: 'long' }, routing: { defaultBudgetMs: 60000 }, kafka: { brokers: ['no-port'], tls: { caFile: '/ca.crt' } } }),
  );
  assert.equal(lines.length, 3, lines.join('\n'));
  // A broker without a port fails only as such, not also the port-range check.
  assert.equal(lines.filter((l) => l.includes('"kafka.brokers.0"')).length, 1);
  assert.ok(lines.some((l) => l.startsWith('config field "processing.noteTimeoutMs"')));
  assert.ok(
    lines.some((l) => l.startsWith('config field "kafka.tls.caFile": is set but kafka.tls.enabled is false')),
    'rules over the valid options still run',
  );
  assert.ok(!lines.some((l) => l.includes('routing.defaultBudgetMs')), lines.join('\n'));
});
