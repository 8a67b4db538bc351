import type { IHeaders, Kafka } from 'kafkajs';

export interface ReadRecord {
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: IHeaders;
  timestamp: string;
}

/**
 * Reads topics from the beginning with a throw-away consumer group until
 * `until(records)` holds or the deadline passes (no fixed sleeps). For tests,
 * the demo and the accounting of what a run produced.
 */
export async function readTopics(kafka: Kafka, topics: string[], until: (records: ReadRecord[]) => boolean, timeoutMs = 30_000): Promise<ReadRecord[]> {
  const consumer = kafka.consumer({
    groupId: `bioner-reader-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`,
    allowAutoTopicCreation: false,
    maxWaitTimeInMs: 100,
  });
  const records: ReadRecord[] = [];
  const seen = new Set<string>();
  await consumer.connect();
  try {
    for (const topic of topics) await consumer.subscribe({ topic, fromBeginning: true });
    let satisfied: () => void = () => undefined;
    const done = new Promise<void>((r) => {
      satisfied = r;
    });
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ topic, partition, message }) => {
        // A rebalance of this throw-away group re-reads from the start: count each record once.
        const id = `${topic}/${partition}/${message.offset}`;
        if (seen.has(id)) return;
        seen.add(id);
        records.push({
          topic,
          partition,
          offset: message.offset,
          key: message.key,
          value: message.value,
          headers: message.headers ?? {},
          timestamp: message.timestamp,
        });
        if (until(records)) satisfied();
      },
    });
    if (until(records)) satisfied();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([done, new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]).finally(() => clearTimeout(timer));
    return records;
  } finally {
    await consumer.disconnect();
  }
}
