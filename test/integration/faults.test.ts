/**
 * Fault-injection suite: the real pipeline on the real librdkafka mock broker
 * and the real models, with faults injected mid-stream. Every test ends with
 * the accounting oracle: every input offset published or dead-lettered, zero
 * missing. Duplicates are allowed (at-least-once) and reported.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type { Kafka } from 'kafkajs';
import { startLlmServer } from '../../src/taggers/llm/reference-server.js';
import { createProcessor, loadEncoder, loadLlm, loadRouter } from '../../src/pipeline/compose.js';
import { FaultProxy } from '../../src/embedded/fault-proxy.js';
import { ApiKeys, KafkaErrorCodes, MockKafkaCluster } from '../../src/embedded/mock-cluster.js';
import { runOracle, type OracleReport } from '../../src/embedded/oracle.js';
import { readTopics } from '../../src/embedded/read-topic.js';
import { createKafka } from '../../src/kafka/index.js';
import { RouterService } from '../../src/pipeline/service.js';
import { decodeTaggedNote, type TaggedNoteRecord } from '../../src/publish/tagged-note.js';
import type { EncoderTagger } from '../../src/taggers/encoder.js';
import { silentLogger } from '../../src/telemetry/logger.js';
import { produceFixtureNotes, startRouterCli, testConfig, uniqueNames, waitFor } from '../helpers/pipeline.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const LLM_MODEL = 'models/bc5cdr-decoder-classifier';
type Names = ReturnType<typeof uniqueNames>;

let cluster: MockKafkaCluster;
let kafka: Kafka;
let encoder: EncoderTagger;

before(async () => {
  cluster = await MockKafkaCluster.start({ brokers: 3 });
  const config = testConfig(cluster.bootstrapServers, uniqueNames('faults-setup'));
  kafka = createKafka(config.kafka, silentLogger);
  encoder = await loadEncoder(config.encoder);
});

after(async () => {
  await encoder?.close();
  await cluster?.stop();
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Topics for one test and `count` fixture notes on 3 input partitions; `budget(i)` sets latency_budget_ms. */
async function setup(prefix: string, count: number, budget: (i: number) => number | null = () => null): Promise<Names> {
  const names = uniqueNames(prefix);
  await cluster.createTopic(names.input, 3);
  await cluster.createTopic(names.output, 3);
  await cluster.createTopic(names.dlq, 1);
  await produceFixtureNotes(kafka, names.input, 'f', count, { budget });
  return names;
}

/** The oracle's verdict every fault test must reach: all published, nothing missing, nothing dead-lettered for a fault. */
function assertAllPublished(report: OracleReport, count: number): void {
  assert.deepEqual(report.missing, [], 'no input offset is missing');
  assert.equal(report.total, count);
  assert.equal(report.published, count, `every note published (dead-lettered: ${JSON.stringify(report.byCode)})`);
}

/** Runs the router in-process on `names` while `fault` runs, then waits for the oracle. */
async function underFault(
  names: Names,
  count: number,
  fault: (service: RouterService) => Promise<void>,
  overrides: Record<string, Record<string, unknown>> = {},
  llm = false,
): Promise<{ report: OracleReport; outputs: TaggedNoteRecord[] }> {
  const config = testConfig(cluster.bootstrapServers, names, { processing: { concurrency: 2, maxInFlight: 4 }, ...overrides });
  const tagger = llm ? await loadLlm(config, silentLogger) : undefined;
  const service = new RouterService(config, createProcessor(config, encoder, {}, tagger, await loadRouter(config, silentLogger)), silentLogger);
  let fatal: unknown;
  service.onFatal = (err) => (fatal = err);
  await service.start();
  let report: OracleReport;
  try {
    await fault(service);
    report = await runOracle(kafka, names, 120_000);
  } finally {
    await service.close();
    await tagger?.close();
  }
  // kafkajs giving up on the consumer would leave a real deployment idle until restarted.
  assert.equal(fatal, undefined, 'the consumer never crashed for good');
  assertAllPublished(report, count);
  return { report, outputs: await readOutputs(names, count) };
}

/** The latest output record per note id. */
async function readOutputs(names: Names, count: number): Promise<TaggedNoteRecord[]> {
  const records = await readTopics(kafka, [names.output], (rs) => new Set(rs.map((r) => r.key?.toString())).size >= count, 30_000);
  const byId = new Map<string, TaggedNoteRecord>();
  for (const r of records) if (r.value !== null) byId.set(r.key?.toString() ?? '', decodeTaggedNote(r.value));
  return [...byId.values()];
}

const publishedAtLeast = (service: RouterService, n: number, what = `${n} notes published`): Promise<void> =>
  waitFor(() => service.stats.published >= n, 60_000, what);

describe('Kafka faults', () => {
  test('a broker down and back up mid-stream, then every broker down and back up', async () => {
    const names = await setup('down', 60);
    const { report } = await underFault(names, 60, async (service) => {
      await publishedAtLeast(service, 10);
      await cluster.brokerDown(1);
      await sleep(3000);
      await cluster.brokerUp(1);
      await publishedAtLeast(service, 30);
      await cluster.brokerDown(-1);
      await sleep(5000);
      await cluster.brokerUp(-1);
    });
    assert.equal(report.deadLettered, 0, 'an outage is never a reason to dead-letter');
  });

  // Produce and OffsetCommit bursts outlast the client's retries (kafka.retries 2), so the pipeline's own handling is exercised too.
  // Each Fetch error costs kafkajs about 20 s on the mock (the consumer restarts and rejoins), so that burst is short.
  const bursts: Array<{ api: keyof typeof ApiKeys; codes: number[]; beforeStart?: boolean }> = [
    {
      api: 'Produce',
      codes: [
        KafkaErrorCodes.NOT_LEADER_FOR_PARTITION,
        KafkaErrorCodes.REQUEST_TIMED_OUT,
        KafkaErrorCodes.LEADER_NOT_AVAILABLE,
        KafkaErrorCodes.NOT_LEADER_FOR_PARTITION,
        KafkaErrorCodes.NETWORK_EXCEPTION,
        KafkaErrorCodes.NOT_LEADER_FOR_PARTITION,
      ],
    },
    { api: 'Fetch', codes: [KafkaErrorCodes.NOT_LEADER_FOR_PARTITION, KafkaErrorCodes.UNKNOWN_TOPIC_OR_PARTITION] },
    {
      api: 'OffsetCommit',
      codes: [
        KafkaErrorCodes.REBALANCE_IN_PROGRESS,
        KafkaErrorCodes.COORDINATOR_NOT_AVAILABLE,
        KafkaErrorCodes.NOT_COORDINATOR,
        KafkaErrorCodes.REQUEST_TIMED_OUT,
      ],
    },
    {
      api: 'JoinGroup',
      codes: [
        KafkaErrorCodes.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaErrorCodes.COORDINATOR_NOT_AVAILABLE,
        KafkaErrorCodes.NOT_COORDINATOR,
        KafkaErrorCodes.COORDINATOR_LOAD_IN_PROGRESS,
      ],
      beforeStart: true,
    },
  ];
  for (const burst of bursts) {
    test(`request errors on ${burst.api}${burst.beforeStart === true ? ' while the group forms' : ' mid-stream'}`, async () => {
      const names = await setup(`err-${burst.api.toLowerCase()}`, 45);
      if (burst.beforeStart === true) await cluster.pushRequestErrors(ApiKeys[burst.api], burst.codes);
      const { report } = await underFault(
        names,
        45,
        async (service) => {
          if (burst.beforeStart === true) return;
          await publishedAtLeast(service, 10);
          await cluster.pushRequestErrors(ApiKeys[burst.api], burst.codes);
        },
        { kafka: { retries: 2 } },
      );
      assert.equal(report.deadLettered, 0);
    });
  }

  test('RTT past the session timeout: the group rebalances, nothing is lost, replays are counted', async () => {
    const names = await setup('rtt', 45);
    const { report } = await underFault(
      names,
      45,
      async (service) => {
        await publishedAtLeast(service, 10);
        // Every response 12 s late against a 10 s session timeout, for 8 s.
        await cluster.setRtt(-1, 12_000);
        await sleep(8000);
        await cluster.setRtt(-1, 0);
      },
      { kafka: { requestTimeoutMs: 30_000 } },
    );
    assert.equal(report.deadLettered, 0);
  });
});

describe('process faults', () => {
  test('SIGKILL mid-batch, restarted in the same group, three times in a row', async () => {
    const count = 60;
    const names = await setup('kill', count);
    const dir = await mkdtemp(join(tmpdir(), 'bioner-kill-'));
    const config = {
      kafka: { brokers: cluster.bootstrapServers },
      input: { topic: names.input, groupId: names.group, maxWaitTimeMs: 100, sessionTimeoutMs: 6000, heartbeatIntervalMs: 500 },
      output: { topic: names.output, dlqTopic: names.dlq },
      processing: { concurrency: 2, maxInFlight: 4 },
      logging: { level: 'warn' },
      telemetry: { port: -1, tracesExporter: 'none' },
    };
    const admin = kafka.admin();
    await admin.connect();
    // High watermarks, not a reader group: a group join alone takes seconds on the mock.
    const outputs = async (): Promise<number> => (await admin.fetchTopicOffsets(names.output)).reduce((n, p) => n + Number(p.high), 0);
    let seen = 0;
    for (let kill = 0; kill < 3; kill++) {
      const cli = await startRouterCli(config, dir);
      // Kill only once this incarnation has published something of its own, so each kill lands mid-stream.
      await waitFor(async () => (await outputs()) >= seen + 5, 90_000, `incarnation ${kill + 1} to publish`);
      cli.child.kill('SIGKILL');
      assert.equal(await cli.exited, null, 'killed by the signal');
      seen = await outputs();
      assert.ok(seen < count * 2, 'the kill came before the end');
    }
    const last = await startRouterCli(config, dir);
    try {
      const report = await runOracle(kafka, names, 120_000);
      assertAllPublished(report, count);
      // Replays are the same note republished under the same key: identical spans.
      const records = await readTopics(kafka, [names.output], (rs) => rs.length >= count + report.duplicates, 20_000);
      const spansById = new Map<string, string>();
      for (const r of records) {
        const rec = decodeTaggedNote(r.value as Buffer);
        const spans = JSON.stringify(rec.spans.map((s) => [s.start, s.end, s.label, s.route]));
        const prev = spansById.get(rec.note_id);
        if (prev !== undefined) assert.equal(spans, prev, `replayed ${rec.note_id} has the same spans`);
        spansById.set(rec.note_id, spans);
      }
      assert.equal(spansById.size, count);
    } finally {
      last.child.kill('SIGTERM');
      assert.equal(await last.exited, 0, `drained cleanly: ${last.output().slice(-500)}`);
      await admin.disconnect();
    }
  });
});

/** A free TCP port (so a restarted server can come back on the same address). */
async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** `bioner-router serve-llm` as a child process; resolves once it prints its URL. */
async function startServeLlm(port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve-llm', '--model', LLM_MODEL, '--port', String(port)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve-llm did not start: ${out.slice(-400)}`)), 30_000);
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes(`127.0.0.1:${port}`)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`serve-llm exited ${String(code)}: ${out.slice(-400)}`)));
  });
  return child;
}

describe('LLM faults', () => {
  const llmSettings = (baseUrl: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    adapter: 'openai',
    baseUrl,
    modelDir: LLM_MODEL,
    timeoutMs: 2000,
    retries: 1,
    retryBackoffMs: 20,
    circuit: { failureThreshold: 3, resetTimeoutMs: 1000 },
    ...extra,
  });
  const reasonsOf = (rec: TaggedNoteRecord): string[] => rec.routing.reasons;

  test('the LLM server killed and restarted mid-stream: notes fall back to the encoder with the reason, then return to the LLM within the stated bound', async () => {
    const before = 30;
    const after = 16;
    const names = await setup('llm-kill', before);
    const port = await freePort();
    let server: ChildProcess | undefined = await startServeLlm(port);
    let killedAt = 0;
    let readyAt = 0;
    // README's recovery rule: once the server is healthy, every LLM call that starts later than
    // max(llm.circuit.resetTimeoutMs, routing.costFailureMemoryMs) goes through (circuit trial, failure memory expired).
    const resetTimeoutMs = 1000;
    const costFailureMemoryMs = 1000;
    const boundMs = Math.max(resetTimeoutMs, costFailureMemoryMs);
    try {
      const { outputs } = await underFault(
        names,
        before + after,
        async (service) => {
          await publishedAtLeast(service, 8);
          killedAt = Date.now();
          server?.kill('SIGKILL');
          const fallbacks = service.stats.published;
          await publishedAtLeast(service, fallbacks + 6, 'notes published while the LLM is down');
          server = await startServeLlm(port);
          readyAt = Date.now();
          // Notes keep arriving after the restart, one every 250 ms for 4 s, so several arrive past the bound whatever the scheduler does.
          await produceFixtureNotes(kafka, names.input, 'after', after, { intervalMs: 250 });
        },
        // No load shedding and a roomy budget: a healthy LLM on a busy machine still answers in time, so every fallback is the outage's.
        {
          routing: { policy: 'llm', costFailureMemoryMs, defaultBudgetMs: 10_000, load: { inFlightHigh: 4 } },
          llm: llmSettings(`http://127.0.0.1:${port}`, { circuit: { failureThreshold: 3, resetTimeoutMs } }),
        },
        true,
      );
      const fellBack = outputs.filter((r) => reasonsOf(r).includes('llm_fallback'));
      assert.ok(fellBack.length >= 3, `notes fell back while the server was down (${fellBack.length})`);
      for (const r of fellBack) {
        assert.ok(
          reasonsOf(r).some((x) => /^llm_fallback:(LLM_UNAVAILABLE|CIRCUIT_OPEN|LLM_TIMEOUT)$/.test(x)),
          `reason recorded: ${reasonsOf(r).join(',')}`,
        );
        assert.equal(r.routing.sentences_llm, 0);
        for (const s of r.spans) assert.equal(s.route, 'encoder_fallback');
      }
      const late = outputs.filter((r) => r.note_id.startsWith('after-'));
      assert.equal(late.length, after);
      // Wall-clock receipt at the router: the record's build time less the note's own latency.
      const sinceReady = (r: TaggedNoteRecord): number => r.produced_at - r.timings.total_ms - readyAt;
      const pastBound = late.filter((r) => sinceReady(r) >= boundMs);
      assert.ok(pastBound.length >= 5, `notes received past the ${boundMs} ms bound: ${pastBound.length} of ${after}`);
      for (const r of pastBound) {
        assert.ok(
          r.routing.sentences_llm > 0,
          `${r.note_id}, received ${Math.round(sinceReady(r))} ms after the restart (bound ${boundMs} ms), is back on the LLM: ${reasonsOf(r).join(',')}`,
        );
      }
      assert.ok(
        outputs.some((r) => r.produced_at < killedAt && r.routing.sentences_llm > 0),
        'before the kill notes went to the LLM',
      );
    } finally {
      server?.kill('SIGKILL');
    }
  });

  test('a slow LLM past small budgets: those notes are tagged by the encoder within their budget; large budgets still wait for it', async () => {
    const count = 30;
    // Every third note has a 10 s budget; the rest 300 ms. Every LLM answer comes 600 ms late.
    const names = await setup('llm-slow', count, (i) => (i % 3 === 0 ? 10_000 : 300));
    const llmServer = await startLlmServer({ modelDir: join(ROOT, LLM_MODEL), port: 0 });
    const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: llmServer.port, delayMs: 600 });
    try {
      const { outputs } = await underFault(
        names,
        count,
        async () => undefined,
        {
          // No load shedding here: the budgets alone decide.
          routing: { policy: 'llm', load: { inFlightHigh: 4 } },
          llm: llmSettings(proxy.url, { timeoutMs: 5000, retries: 0, maxConcurrency: 16 }),
        },
        true,
      );
      const small = outputs.filter((r) => r.routing.budget_ms === 300);
      const large = outputs.filter((r) => r.routing.budget_ms === 10_000);
      assert.equal(small.length + large.length, count);
      for (const r of small) {
        assert.equal(r.routing.sentences_llm, 0, `${r.note_id}: no LLM answer fits in 300 ms`);
        // The LLM part never runs past the budget (small slack for timers).
        assert.ok(r.routing.actual_llm_ms <= 300 + 150, `${r.note_id}: LLM time ${r.routing.actual_llm_ms} ms within the budget`);
        assert.ok(
          reasonsOf(r).some((x) => x === 'budget_exhausted' || x === 'llm_fallback:LLM_BUDGET_EXCEEDED'),
          `${r.note_id}: ${reasonsOf(r).join(',')}`,
        );
        assert.ok(r.spans.every((s) => s.route !== 'llm'));
      }
      const waited = large.filter((r) => r.routing.sentences_llm > 0);
      assert.ok(waited.length >= large.length / 2, `notes with room in their budget still wait for the slow LLM (${waited.length} of ${large.length})`);
      for (const r of waited) assert.ok(r.routing.actual_llm_ms >= 600, `${r.note_id}: the LLM answer took its 600 ms delay`);
    } finally {
      await proxy.close();
      await llmServer.close();
    }
  });
});
