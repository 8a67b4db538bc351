import assert from 'node:assert/strict';
import { test } from 'node:test';
import { brokerAddress } from '../../src/telemetry/pipeline-spans.js';

test('server.address/port of messaging spans come from a bootstrap server string', () => {
  assert.deepEqual(brokerAddress('kafka-0.kafka:9093'), { address: 'kafka-0.kafka', port: 9093 });
  assert.deepEqual(brokerAddress('127.0.0.1:40123'), { address: '127.0.0.1', port: 40123 });
  assert.deepEqual(brokerAddress('[::1]:9092'), { address: '::1', port: 9092 });
  assert.equal(brokerAddress('no-port'), undefined);
  assert.equal(brokerAddress(undefined), undefined);
});
