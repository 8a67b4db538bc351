/**
 * `npm run soak` [-- --minutes 3 --rate 4 --seed 7 --policy cascade]
 *
 * Runs the router (as a real `bioner-router run` child process) over the
 * mtsamples notes at a steady rate for a bounded time on the embedded mock
 * cluster, with faults injected at seeded random times: brokers down and up,
 * request-error bursts, RTT spikes, the router killed (SIGKILL) or stopped
 * (SIGTERM) and restarted, the LLM server cut off or slowed. About 3% of the
 * records are malformed. At the end it clears every fault, waits for the
 * accounting oracle and prints its verdict, the throughput and the router's
 * memory over time. Exit 0 when nothing is missing, every malformed record is
 * in the DLQ and every good note is published; 1 otherwise.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { malformedRecords } from '../src/cli/demo.js';
import { validateConfig } from '../src/config/load.js';
import { startLlmServer } from '../src/taggers/llm/reference-server.js';
import { FaultProxy } from '../src/embedded/fault-proxy.js';
import { ApiKeys, KafkaErrorCodes, MockKafkaCluster } from '../src/embedded/mock-cluster.js';
import { runOracle } from '../src/embedded/oracle.js';
import { readTopics } from '../src/embedded/read-topic.js';
import { readMtsamplesCsv, readNotesFile } from '../src/eval/datasets.js';
import { mulberry32 } from '../src/eval/random.js';
import { encodeNote } from '../src/ingest/decode.js';
import { createKafka, createProducer } from '../src/kafka/index.js';
import { POLICY_NAMES } from '../src/route/index.js';
import { packageRoot } from '../src/schemas.js';
import { silentLogger } from '../src/telemetry/logger.js';

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '3' },
    rate: { type: 'string', default: '4' },
    seed: { type: 'string', default: '7' },
    policy: { type: 'string', default: 'cascade' },
    'bad-share': { type: 'string', default: '0.03' },
  },
});
const MINUTES = Number(args.minutes);
const RATE = Number(args.rate);
const SEED = Number(args.seed);
const BAD_SHARE = Number(args['bad-share']);
const POLICY = String(args.policy);
if (!(MINUTES > 0) || !(RATE > 0) || !Number.isInteger(SEED) || !(BAD_SHARE >= 0 && BAD_SHARE < 1) || !(POLICY_NAMES as readonly string[]).includes(POLICY)) {
  process.stderr.write(`usage: npm run soak -- [--minutes M>0] [--rate notes/s>0] [--seed INT] [--policy ${POLICY_NAMES.join('|')}] [--bad-share 0..1]\n`);
  process.exit(2);
}

// Seeded, so a failing soak can be replayed with the same fault schedule.
const rand = mulberry32(SEED);
const uniform = (lo: number, hi: number): number => lo + (hi - lo) * rand();
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const started = performance.now();
const clock = (): number => (performance.now() - started) / 1000;
const say = (line: string): void => {
  process.stderr.write(`[${clock().toFixed(1).padStart(6)} s] ${line}\n`);
};

interface RssSample {
  t: number;
  mb: number;
}

/** The router as a child process; one incarnation per start, each with its memory samples. */
class RouterProcess {
  child: ChildProcess | undefined;
  readonly incarnations: Array<{ startedAt: number; endedAt?: number; how?: string; rss: RssSample[] }> = [];
  private tail = '';
  private sampler: NodeJS.Timeout | undefined;

  constructor(private readonly configFile: string) {}

  start(): void {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'run', '--config', this.configFile], {
      cwd: packageRoot,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const inc: (typeof this.incarnations)[number] = { startedAt: clock(), rss: [] };
    this.incarnations.push(inc);
    child.stderr?.on('data', (d: Buffer) => {
      this.tail = (this.tail + d.toString()).slice(-4000);
    });
    child.once('exit', (code, signal) => {
      inc.endedAt = clock();
      inc.how ??= signal ?? `exit ${String(code)}`;
      if (this.child === child) this.child = undefined;
    });
    this.child = child;
    clearInterval(this.sampler);
    this.sampler = setInterval(() => {
      const pid = child.pid;
      if (pid === undefined || child.exitCode !== null) return;
      try {
        const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
        if (m) inc.rss.push({ t: clock(), mb: Number(m[1]) / 1024 });
      } catch {
        // exited between the check and the read
      }
    }, 2000);
  }

  async stop(signal: NodeJS.Signals): Promise<number | null> {
    const child = this.child;
    if (child === undefined) return null;
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    this.incarnations[this.incarnations.length - 1].how = signal;
    child.kill(signal);
    const code = await exited;
    clearInterval(this.sampler);
    return code;
  }

  get logTail(): string {
    return this.tail;
  }
}

/** Least-squares slope of RSS over time, in MB per minute. */
function slopeMbPerMin(samples: RssSample[]): number {
  if (samples.length < 3) return 0;
  const n = samples.length;
  const mt = samples.reduce((a, s) => a + s.t, 0) / n;
  const mm = samples.reduce((a, s) => a + s.mb, 0) / n;
  const num = samples.reduce((a, s) => a + (s.t - mt) * (s.mb - mm), 0);
  const den = samples.reduce((a, s) => a + (s.t - mt) ** 2, 0);
  return den === 0 ? 0 : (num / den) * 60;
}

async function loadTexts(): Promise<string[]> {
  const csv = resolve(packageRoot, '../shared/data/mtsamples/mtsamples.csv');
  if (existsSync(csv)) return (await readMtsamplesCsv(csv)).filter((t) => t.trim() !== '');
  return (await readNotesFile(resolve(packageRoot, 'test/fixtures/mtsamples/notes.jsonl'))).map((n) => n.text).filter((t) => t.trim() !== '');
}

async function main(): Promise<void> {
  const texts = await loadTexts();
  const topics = { input: 'soak-notes', output: 'soak-tagged', dlq: 'soak-dlq' };
  const cluster = await MockKafkaCluster.startForPipeline(topics);
  const llmServer = await startLlmServer({ modelDir: resolve(packageRoot, 'models/bc5cdr-decoder-classifier'), port: 0 });
  const llmProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: llmServer.port });
  const dir = await mkdtemp(join(tmpdir(), 'bioner-soak-'));
  const configFile = join(dir, 'router.yaml');
  await writeFile(
    configFile,
    JSON.stringify({
      kafka: { brokers: cluster.bootstrapServers, clientId: 'bioner-soak' },
      input: { topic: topics.input, groupId: 'bioner-soak', maxWaitTimeMs: 100, sessionTimeoutMs: 10_000, heartbeatIntervalMs: 1000 },
      output: { topic: topics.output, dlqTopic: topics.dlq },
      processing: { concurrency: 4, maxInFlight: 16 },
      routing: { policy: POLICY, defaultBudgetMs: 3000 },
      llm: {
        adapter: 'openai',
        baseUrl: llmProxy.url,
        modelDir: 'models/bc5cdr-decoder-classifier',
        timeoutMs: 2000,
        retries: 1,
        retryBackoffMs: 50,
        circuit: { failureThreshold: 5, resetTimeoutMs: 2000 },
      },
      logging: { level: 'warn' },
      telemetry: { port: -1, tracesExporter: 'none' },
    }),
  );
  const router = new RouterProcess(configFile);
  say(
    `soak: ${MINUTES} min at ${RATE} notes/s, seed ${SEED}, policy ${POLICY}, ${texts.length} source notes, embedded cluster ${cluster.bootstrapServers.join(',')}`,
  );
  router.start();

  const kafka = createKafka(validateConfig({ kafka: { brokers: cluster.bootstrapServers, clientId: 'bioner-soak-driver' } }).kafka, silentLogger);
  const producer = createProducer(kafka);
  await producer.connect();
  const produced = { good: 0, bad: 0, sendRetries: 0 };
  const badTemplates = malformedRecords();
  const endAt = MINUTES * 60;
  let producing = true;

  // Steady rate: one record per tick; a send that fails (broker down) is retried, so the schedule slips rather than drops.
  const producerLoop = (async () => {
    let n = 0;
    const interval = 1000 / RATE;
    let next = performance.now();
    while (producing) {
      const bad = rand() < BAD_SHARE;
      const message = bad
        ? (() => {
            const b = badTemplates[n % badTemplates.length];
            return { key: `bad-${n}-${b.expect}`, value: b.value };
          })()
        : {
            key: `soak-${n}`,
            value: encodeNote(
              {
                noteId: `soak-${n}`,
                text: texts[n % texts.length],
                source: 'mtsamples',
                latencyBudgetMs: pick([null, 200, 1000, 3000]),
                patientId: null,
                metadata: null,
              },
              'json',
            ),
          };
      for (;;) {
        try {
          await producer.send({ topic: topics.input, messages: [message] });
          break;
        } catch {
          produced.sendRetries++;
          await sleep(500);
        }
      }
      if (bad) produced.bad++;
      else produced.good++;
      n++;
      next += interval;
      await sleep(Math.max(0, next - performance.now()));
    }
  })();

  // Faults at seeded random times; each one is undone before the next.
  const faults: Array<{ t: number; kind: string; detail: string }> = [];
  const faultKinds = ['broker-down', 'all-brokers-down', 'request-errors', 'rtt', 'router-sigkill', 'router-sigterm', 'llm-down', 'llm-slow'] as const;
  const errorBursts: Array<[keyof typeof ApiKeys, number[]]> = [
    ['Produce', [KafkaErrorCodes.NOT_LEADER_FOR_PARTITION, KafkaErrorCodes.REQUEST_TIMED_OUT, KafkaErrorCodes.NOT_LEADER_FOR_PARTITION]],
    ['Fetch', [KafkaErrorCodes.NOT_LEADER_FOR_PARTITION, KafkaErrorCodes.UNKNOWN_TOPIC_OR_PARTITION]],
    ['OffsetCommit', [KafkaErrorCodes.REBALANCE_IN_PROGRESS, KafkaErrorCodes.COORDINATOR_NOT_AVAILABLE, KafkaErrorCodes.NOT_COORDINATOR]],
    ['JoinGroup', [KafkaErrorCodes.COORDINATOR_LOAD_IN_PROGRESS, KafkaErrorCodes.NOT_COORDINATOR]],
    ['Heartbeat', [KafkaErrorCodes.REBALANCE_IN_PROGRESS, KafkaErrorCodes.NOT_COORDINATOR]],
    ['Metadata', [KafkaErrorCodes.LEADER_NOT_AVAILABLE, KafkaErrorCodes.REQUEST_TIMED_OUT]],
  ];
  const faultLoop = (async () => {
    await sleep(15_000); // let the group form first
    while (clock() < endAt - 10) {
      const kind = pick(faultKinds);
      let detail = '';
      switch (kind) {
        case 'broker-down': {
          const id = 1 + Math.floor(rand() * 3);
          const ms = Math.round(uniform(1000, 5000));
          detail = `broker ${id} for ${ms} ms`;
          await cluster.brokerDown(id);
          await sleep(ms);
          await cluster.brokerUp(id);
          break;
        }
        case 'all-brokers-down': {
          const ms = Math.round(uniform(1000, 4000));
          detail = `${ms} ms`;
          await cluster.brokerDown(-1);
          await sleep(ms);
          await cluster.brokerUp(-1);
          break;
        }
        case 'request-errors': {
          const [api, codes] = pick(errorBursts);
          detail = `${api} x${codes.length}`;
          await cluster.pushRequestErrors(ApiKeys[api], codes);
          break;
        }
        case 'rtt': {
          const rtt = Math.round(uniform(500, 4000));
          const ms = Math.round(uniform(3000, 8000));
          detail = `${rtt} ms RTT for ${ms} ms`;
          await cluster.setRtt(-1, rtt);
          await sleep(ms);
          await cluster.setRtt(-1, 0);
          break;
        }
        case 'router-sigkill':
        case 'router-sigterm': {
          const signal = kind === 'router-sigkill' ? 'SIGKILL' : 'SIGTERM';
          const code = await router.stop(signal);
          detail = `exit ${String(code)}`;
          await sleep(1000);
          router.start();
          break;
        }
        case 'llm-down': {
          const ms = Math.round(uniform(2000, 6000));
          detail = `${ms} ms`;
          llmProxy.down();
          await sleep(ms);
          llmProxy.up();
          break;
        }
        case 'llm-slow': {
          const delay = Math.round(uniform(500, 2500));
          const ms = Math.round(uniform(3000, 8000));
          detail = `+${delay} ms for ${ms} ms`;
          llmProxy.delayMs = delay;
          await sleep(ms);
          llmProxy.delayMs = 0;
          break;
        }
      }
      faults.push({ t: Number(clock().toFixed(1)), kind, detail });
      say(`fault ${kind} ${detail}`);
      await sleep(uniform(4000, 12_000));
    }
  })();

  while (clock() < endAt) {
    await sleep(Math.min(10_000, (endAt - clock()) * 1000));
    say(`produced ${produced.good} good + ${produced.bad} malformed; router incarnations ${router.incarnations.length}`);
  }
  producing = false;
  await producerLoop;
  await faultLoop;
  const productionEnded = clock();
  await cluster.setRtt(-1, 0);
  await cluster.brokerUp(-1);
  llmProxy.up();
  llmProxy.delayMs = 0;
  if (router.child === undefined) router.start();
  say('faults cleared; waiting for the oracle');
  const report = await runOracle(kafka, topics, 300_000);
  const drainedAt = clock();
  // Key-level check: malformed records only in the DLQ, good notes only in the output.
  const records = await readTopics(kafka, [topics.output, topics.dlq], () => false, 8000);
  const misrouted = records.filter((r) => {
    const key = r.key?.toString() ?? '';
    return (r.topic === topics.dlq) !== key.startsWith('bad-');
  }).length;
  const exitCode = await router.stop('SIGTERM');
  await producer.disconnect();
  await llmProxy.close();
  await llmServer.close();
  await cluster.stop();
  await rm(dir, { recursive: true, force: true });

  const longest = router.incarnations.reduce((a, b) => ((b.endedAt ?? drainedAt) - b.startedAt > (a.endedAt ?? drainedAt) - a.startedAt ? b : a));
  const warm = longest.rss.filter((s) => s.t - longest.startedAt >= 30);
  const allRss = router.incarnations.flatMap((i) => i.rss.map((s) => s.mb));
  const byKind: Record<string, number> = {};
  for (const f of faults) byKind[f.kind] = (byKind[f.kind] ?? 0) + 1;
  const pass = report.missing.length === 0 && misrouted === 0 && report.deadLettered === produced.bad && report.published === produced.good;
  const summary = {
    verdict: pass ? 'PASS' : 'FAIL',
    seed: SEED,
    policy: POLICY,
    minutes: MINUTES,
    rate_target: RATE,
    produced_good: produced.good,
    produced_bad: produced.bad,
    producer_send_retries: produced.sendRetries,
    input_offsets: report.total,
    published: report.published,
    dead_lettered: report.deadLettered,
    dlq_by_code: report.byCode,
    missing: report.missing.length,
    duplicates: report.duplicates,
    misrouted,
    notes_per_s: Number((report.published / drainedAt).toFixed(2)),
    catch_up_s: Number((drainedAt - productionEnded).toFixed(1)),
    faults: faults.length,
    faults_by_kind: byKind,
    router_incarnations: router.incarnations.length,
    final_exit_code: exitCode,
    rss_peak_mb: Number(Math.max(0, ...allRss).toFixed(1)),
    longest_incarnation_s: Number(((longest.endedAt ?? drainedAt) - longest.startedAt).toFixed(1)),
    rss_longest_first_mb: Number((warm[0]?.mb ?? 0).toFixed(1)),
    rss_longest_last_mb: Number((warm.at(-1)?.mb ?? 0).toFixed(1)),
    rss_growth_mb_per_min: Number(slopeMbPerMin(warm).toFixed(2)),
    // The longest incarnation's RSS about every 30 s from its start: a leak keeps climbing, warm-up flattens.
    rss_longest_every_30s_mb: longest.rss.filter((_, i) => i % 15 === 0).map((x) => Math.round(x.mb)),
  };
  const w = Math.max(...Object.keys(summary).map((k) => k.length));
  process.stdout.write(`bioner-router soak (${MINUTES} min, seed ${SEED})\n`);
  for (const [k, v] of Object.entries(summary)) process.stdout.write(`${k.padEnd(w)}  ${typeof v === 'object' ? JSON.stringify(v) : String(v)}\n`);
  process.stdout.write(JSON.stringify(summary) + '\n');
  if (!pass) {
    process.stderr.write(`missing offsets (first 20): ${report.missing.slice(0, 20).join(' ')}\nrouter log tail:\n${router.logTail.slice(-1500)}\n`);
    process.exit(1);
  }
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`soak failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
