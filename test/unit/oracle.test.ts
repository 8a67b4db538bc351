import assert from 'node:assert/strict';
import { test } from 'node:test';
import { accountOffsets } from '../../src/embedded/oracle.js';
import type { ReadRecord } from '../../src/embedded/read-topic.js';
import { InvalidRecordError } from '../../src/errors.js';
import { buildDlqMessage } from '../../src/publish/dlq.js';
import { SourceHeaders, toTaggedNoteRecord, encodeTaggedNote } from '../../src/publish/tagged-note.js';

const topics = { output: 'out', dlq: 'dlq' };

/** A real Avro output record for the input record at partition:offset. */
function output(partition: number, offset: number): ReadRecord {
  const record = toTaggedNoteRecord(
    {
      noteId: `n-${partition}-${offset}`,
      source: null,
      position: { topic: 'in', partition, offset: String(offset) },
      model: { id: 'm', version: '1' },
      spans: [],
      routing: {
        policy: 'encoder',
        budgetMs: 0,
        sentences: 1,
        sentencesEncoder: 1,
        sentencesLlm: 0,
        reasons: [],
        granularity: 'note',
        budgetSource: 'default',
        effectiveBudgetMs: 0,
        loadFactor: 0,
        predictedEncoderMs: 0,
        predictedLlmMs: 0,
        actualEncoderMs: 0,
        actualLlmMs: 0,
        llmSentences: [],
        estimatedGain: 0,
      },
      timings: { textMs: 0, routeMs: 0, encoderMs: 0, llmMs: 0, totalMs: 0 },
      metadata: null,
    },
    'aspirin',
  );
  return { topic: 'out', partition: 0, offset: '0', key: null, value: encodeTaggedNote(record), headers: {}, timestamp: '0' };
}

/** A real DLQ record (headers as the service writes them) for partition:offset. */
function dead(partition: number, offset: number, code: 'DECODE_FAILED' | 'TEXT_EMPTY'): ReadRecord {
  const msg = buildDlqMessage(
    { key: null, value: Buffer.from('x'), headers: {}, timestamp: '0' },
    { topic: 'in', partition, offset: String(offset) },
    new InvalidRecordError(code, 'bad'),
    'decode',
  );
  return { topic: 'dlq', partition: 0, offset: '0', key: null, value: msg.value, headers: msg.headers as ReadRecord['headers'], timestamp: '0' };
}

test('every input offset is published, dead-lettered or missing; extra copies count as duplicates', () => {
  const inputs = ['0:0', '0:1', '0:2', '1:0', '1:1', '1:2'];
  const records = [output(0, 0), output(0, 0), dead(0, 1, 'DECODE_FAILED'), output(1, 0), dead(1, 1, 'TEXT_EMPTY'), dead(1, 1, 'TEXT_EMPTY'), output(7, 7)];
  const report = accountOffsets(inputs, records, topics);
  assert.equal(report.total, 6);
  assert.equal(report.published, 2);
  assert.equal(report.deadLettered, 2);
  assert.deepEqual(report.missing, ['0:2', '1:2']);
  assert.equal(report.duplicates, 2, 'one replayed output and one replayed DLQ record');
  assert.deepEqual(report.byCode, { DECODE_FAILED: 1, TEXT_EMPTY: 1 });
});

test('an offset both dead-lettered and later published counts as published, the DLQ copy as a duplicate', () => {
  const report = accountOffsets(['0:0'], [dead(0, 0, 'DECODE_FAILED'), output(0, 0)], topics);
  assert.equal(report.published, 1);
  assert.equal(report.deadLettered, 0);
  assert.equal(report.duplicates, 1);
  assert.deepEqual(report.missing, []);
});

test('records from other topics and tombstones without source headers are ignored; a propagated tombstone accounts for its input offset', () => {
  const stray: ReadRecord = { ...output(0, 0), topic: 'elsewhere' };
  const bare: ReadRecord = { ...output(0, 0), value: null };
  assert.deepEqual(accountOffsets(['0:0'], [stray, bare], topics).missing, ['0:0']);
  const propagated: ReadRecord = {
    ...output(0, 0),
    value: null,
    headers: { [SourceHeaders.topic]: Buffer.from('in'), [SourceHeaders.partition]: Buffer.from('0'), [SourceHeaders.offset]: Buffer.from('0') },
  };
  const report = accountOffsets(['0:0'], [propagated], topics);
  assert.deepEqual(report.missing, []);
  assert.equal(report.published, 1);
});
