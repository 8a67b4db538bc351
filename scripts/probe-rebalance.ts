/**
 * Where the rebalance pause of `npm run bench:scale` comes from (issue 18).
 *
 * Two plain kafkajs consumers in one group on the librdkafka mock cluster,
 * no router: the first joins and settles, then the second joins, and the
 * probe times how long until both hold an assignment again (the group is
 * stopped for that long). It repeats this for several session timeouts and
 * heartbeat intervals. If the pause follows the session timeout and not the
 * heartbeat, the broker's join phase waits out a timer; if it follows the
 * heartbeat, it waits for the old member to notice the rebalance.
 *
 *   npm run probe:rebalance
 */
import { performance } from 'node:perf_hooks';
import { type Consumer, Kafka, logLevel } from 'kafkajs';
import { MockKafkaCluster } from '../src/embedded/mock-cluster.js';

interface Setting {
  sessionTimeoutMs: number;
  heartbeatIntervalMs: number;
}

const SETTINGS: Setting[] = [
  { sessionTimeoutMs: 6000, heartbeatIntervalMs: 1000 },
  { sessionTimeoutMs: 6000, heartbeatIntervalMs: 300 },
  { sessionTimeoutMs: 10000, heartbeatIntervalMs: 1000 },
  { sessionTimeoutMs: 15000, heartbeatIntervalMs: 1000 },
];

async function joinPause(cluster: MockKafkaCluster, s: Setting, run: number): Promise<{ firstJoinMs: number; joinPauseMs: number }> {
  const topic = `probe-${run}`;
  await cluster.createTopic(topic, 4);
  const kafka = new Kafka({ clientId: `probe-${run}`, brokers: cluster.bootstrapServers, logLevel: logLevel.NOTHING });
  const groupId = `probe-group-${run}`;
  const joins = new Map<Consumer, number>();
  const make = (): Consumer => {
    const c = kafka.consumer({ groupId, sessionTimeout: s.sessionTimeoutMs, heartbeatInterval: s.heartbeatIntervalMs, maxWaitTimeInMs: 100 });
    c.on(c.events.GROUP_JOIN, () => joins.set(c, performance.now()));
    return c;
  };
  const until = async (ok: () => boolean, what: string): Promise<void> => {
    const deadline = performance.now() + 60_000;
    while (!ok()) {
      if (performance.now() > deadline) throw new Error(`probe: timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const a = make();
  const b = make();
  try {
    const t0 = performance.now();
    await a.connect();
    await a.subscribe({ topic, fromBeginning: true });
    await a.run({ eachMessage: async () => {} });
    await until(() => joins.has(a), 'the first member');
    const firstJoinMs = (joins.get(a) ?? t0) - t0;
    await new Promise((r) => setTimeout(r, 2 * s.heartbeatIntervalMs + 500));
    joins.clear();
    const t1 = performance.now();
    await b.connect();
    await b.subscribe({ topic, fromBeginning: true });
    await b.run({ eachMessage: async () => {} });
    await until(() => joins.has(a) && joins.has(b), 'both members after the join');
    return { firstJoinMs, joinPauseMs: Math.max(joins.get(a) ?? 0, joins.get(b) ?? 0) - t1 };
  } finally {
    await Promise.allSettled([a.disconnect(), b.disconnect()]);
  }
}

async function main(): Promise<void> {
  const cluster = await MockKafkaCluster.start({ brokers: 1 });
  const rows: Array<Setting & { firstJoinMs: number; joinPauseMs: number }> = [];
  try {
    let run = 0;
    for (const s of SETTINGS) {
      const r = await joinPause(cluster, s, run++);
      rows.push({ ...s, ...r });
      process.stderr.write(
        `session ${s.sessionTimeoutMs} ms, heartbeat ${s.heartbeatIntervalMs} ms: first join ${r.firstJoinMs.toFixed(0)} ms, second member's join pause ${r.joinPauseMs.toFixed(0)} ms\n`,
      );
    }
  } finally {
    await cluster.stop();
  }
  console.log('| session timeout | heartbeat | first join | pause when a second member joins |');
  console.log('|---:|---:|---:|---:|');
  for (const r of rows)
    console.log(`| ${r.sessionTimeoutMs} ms | ${r.heartbeatIntervalMs} ms | ${r.firstJoinMs.toFixed(0)} ms | ${r.joinPauseMs.toFixed(0)} ms |`);
  console.log(JSON.stringify({ probe: 'rebalance', rows }));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
