import assert from 'node:assert/strict';
import { test } from 'node:test';
import { safeHooks } from '../../src/telemetry/hooks.js';
import { createLogger } from '../../src/telemetry/logger.js';

test('a throwing or rejecting hook is logged and never escapes', async () => {
  const lines: string[] = [];
  const logger = createLogger('warn', (l) => lines.push(l));
  const hooks = safeHooks(
    {
      noteReceived: () => {
        throw new Error('sync boom');
      },
      notePublished: (async () => {
        throw new Error('async boom');
      }) as unknown as () => void,
    },
    logger,
  );
  let unhandled = 0;
  const onUnhandled = (): void => {
    unhandled++;
  };
  process.on('unhandledRejection', onUnhandled);
  try {
    hooks.noteReceived({ topic: 't', partition: 0, offset: '0', bytes: 1 });
    hooks.notePublished({
      noteId: 'n',
      topic: 't',
      spans: 0,
      totalMs: 1,
      routes: { encoder: 0, llm: 0, encoder_fallback: 0 },
      routing: {
        policy: 'encoder',
        budgetMs: 1,
        sentences: 0,
        sentencesEncoder: 0,
        sentencesLlm: 0,
        reasons: [],
        granularity: 'sentence',
        budgetSource: 'default',
        effectiveBudgetMs: 1,
        loadFactor: 1,
        predictedEncoderMs: 0,
        predictedLlmMs: 0,
        actualEncoderMs: 0,
        actualLlmMs: 0,
        llmSentences: [],
        estimatedGain: 0,
      },
    });
    hooks.noteDeadLettered({ topic: 't', partition: 0, offset: '0', code: 'X', stage: 'decode' }); // not provided: a no-op
    await new Promise((r) => setTimeout(r, 20));
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
  assert.equal(unhandled, 0);
  assert.equal(lines.filter((l) => l.includes('pipeline hook failed')).length, 2);
});

test('the logger drops PHI-named fields', () => {
  const lines: string[] = [];
  const logger = createLogger('info', (l) => lines.push(l));
  logger.info('x', { noteId: 'n1', text: 'SECRET', patient_id: 'P1', chars: 10 });
  const rec = JSON.parse(lines[0]) as Record<string, unknown>;
  assert.equal(rec.noteId, 'n1');
  assert.equal(rec.chars, 10);
  assert.ok(!('text' in rec) && !('patient_id' in rec));
});
