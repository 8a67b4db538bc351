import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyEnvironment, environmentOverrides, validateConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';

function expectField(fn: () => unknown, field: string, pattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.field, field);
    assert.ok(err.message.includes(field), err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

test('llm defaults: in-process onnx adapter on the reference decoder, encoder policy', () => {
  const c = validateConfig({});
  assert.equal(c.llm.adapter, 'onnx');
  assert.equal(c.llm.modelDir, 'models/bc5cdr-generative');
  assert.equal(c.llm.baseUrl, undefined);
  assert.equal(c.llm.structuredOutputs, 'json');
  assert.equal(c.llm.endpoint, 'chat');
  assert.equal(c.llm.wordSplit, 'pipeline');
  assert.equal(c.llm.logprobs, true);
  assert.deepEqual(c.llm.circuit, { failureThreshold: 5, resetTimeoutMs: 30000 });
  assert.ok(c.llm.timeoutMs < c.processing.noteTimeoutMs);
  assert.equal(c.routing.policy, 'encoder');
});

test('llm cross-field rules name the field', () => {
  expectField(() => validateConfig({ llm: { timeoutMs: 20000 } }), 'llm.timeoutMs', /processing\.noteTimeoutMs/);
  expectField(() => validateConfig({ llm: { timeoutMs: 5000 }, processing: { noteTimeoutMs: 5000 } }), 'llm.timeoutMs');
  expectField(() => validateConfig({ llm: { adapter: 'openai' } }), 'llm.baseUrl', /required/);
  expectField(() => validateConfig({ llm: { adapter: 'vllm-pooling' } }), 'llm.baseUrl', /required/);
  expectField(() => validateConfig({ llm: { adapter: 'openai', baseUrl: 'http://h:8000/v1' } }), 'llm.baseUrl', /without \/v1/);
  expectField(() => validateConfig({ llm: { adapter: 'openai', baseUrl: 'ftp://h' } }), 'llm.baseUrl', /http/);
  expectField(() => validateConfig({ llm: { adapter: 'gemini' } }), 'llm.adapter');
  expectField(() => validateConfig({ llm: { circuit: { failureThreshold: 0 } } }), 'llm.circuit.failureThreshold');
  expectField(() => validateConfig({ llm: { circuit: { bogus: 1 } } }), 'llm.circuit.bogus', /unknown option/);
  expectField(() => validateConfig({ routing: { policy: 'greedy' } }), 'routing.policy');
  expectField(() => validateConfig({ routing: { policy: 'cascade', granularity: 'note' } }), 'routing.granularity', /sentence/);
  expectField(() => validateConfig({ routing: { load: { inFlightHigh: 500 } } }), 'routing.load.inFlightHigh', /maxInFlight/);
  expectField(() => validateConfig({ routing: { topicBudgets: { urgent: 999999 } } }), 'routing.topicBudgets.urgent', /noteTimeoutMs/);
  const ok = validateConfig({ llm: { adapter: 'openai', baseUrl: 'http://127.0.0.1:8000/' }, routing: { policy: 'llm' } });
  assert.equal(ok.llm.adapter, 'openai');
});

test('every llm option has an environment variable, optional ones without defaults included', () => {
  const vars = new Map(environmentOverrides().map((o) => [o.variable, o.path.join('.')]));
  for (const [v, path] of [
    ['BIONER_LLM_ADAPTER', 'llm.adapter'],
    ['BIONER_LLM_BASE_URL', 'llm.baseUrl'],
    ['BIONER_LLM_MODEL', 'llm.model'],
    ['BIONER_LLM_API_KEY_FILE', 'llm.apiKeyFile'],
    ['BIONER_LLM_LABELS', 'llm.labels'],
    ['BIONER_LLM_TIMEOUT_MS', 'llm.timeoutMs'],
    ['BIONER_LLM_MAX_CONCURRENCY', 'llm.maxConcurrency'],
    ['BIONER_LLM_STRUCTURED_OUTPUTS', 'llm.structuredOutputs'],
    ['BIONER_LLM_ENDPOINT', 'llm.endpoint'],
    ['BIONER_LLM_PROMPT_FILE', 'llm.promptFile'],
    ['BIONER_LLM_WORD_SPLIT', 'llm.wordSplit'],
    ['BIONER_LLM_LOGPROBS', 'llm.logprobs'],
    ['BIONER_ROUTING_LLM_CAP_MAX_SENTENCE_SHARE', 'routing.llmCap.maxSentenceShare'],
    ['BIONER_ROUTING_LLM_CAP_MAX_TOKENS_PER_MINUTE', 'routing.llmCap.maxTokensPerMinute'],
    ['BIONER_ROUTING_LLM_CAP_WINDOW_MS', 'routing.llmCap.windowMs'],
    ['BIONER_LLM_CIRCUIT_FAILURE_THRESHOLD', 'llm.circuit.failureThreshold'],
    ['BIONER_LLM_CIRCUIT_RESET_TIMEOUT_MS', 'llm.circuit.resetTimeoutMs'],
    ['BIONER_ENCODER_MAX_SEQUENCE_LENGTH', 'encoder.maxSequenceLength'],
  ]) {
    assert.equal(vars.get(v), path, v);
  }
  const c = validateConfig(
    applyEnvironment(
      {},
      {
        BIONER_LLM_ADAPTER: 'vllm-pooling',
        BIONER_LLM_BASE_URL: 'http://vllm:8000',
        BIONER_LLM_MODEL: 'bioner/bc5cdr',
        BIONER_LLM_LABELS: 'O, B-Chemical, I-Chemical',
        BIONER_LLM_STRUCTURED_OUTPUTS: 'false',
        BIONER_LLM_CIRCUIT_FAILURE_THRESHOLD: '9',
        BIONER_ROUTING_POLICY: 'llm',
      },
    ),
  );
  assert.equal(c.llm.adapter, 'vllm-pooling');
  assert.equal(c.llm.baseUrl, 'http://vllm:8000');
  assert.equal(c.llm.model, 'bioner/bc5cdr');
  assert.deepEqual(c.llm.labels, ['O', 'B-Chemical', 'I-Chemical']);
  // The old boolean spelling still works: false is `none`.
  assert.equal(c.llm.structuredOutputs, 'none');
  assert.equal(c.llm.circuit.failureThreshold, 9);
  assert.equal(c.routing.policy, 'llm');
});
