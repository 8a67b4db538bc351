import { readFile } from 'node:fs/promises';
import { ConfigSchema } from '../config/schema.js';
import { createProcessor, loadEncoder } from '../pipeline/compose.js';
import { makeOffsetConverter } from '../text/codepoints.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** `bioner-router tag [--model DIR] [FILE]`: spans of one text as JSON (offsets in code points, as in the Avro output). */
export async function tagCommand(modelDir: string | undefined, file: string | undefined): Promise<void> {
  const config = ConfigSchema.parse(modelDir === undefined ? {} : { encoder: { modelDir } });
  const text = file === undefined || file === '-' ? await readStdin() : await readFile(file, 'utf8');
  const encoder = await loadEncoder(config.encoder);
  try {
    const processor = createProcessor(config, encoder);
    const { spans } = await processor.process(
      { noteId: file ?? 'stdin', text, source: null, latencyBudgetMs: null, patientId: null, metadata: null },
      { topic: '', partition: 0, offset: '0' },
    );
    const conv = makeOffsetConverter(text);
    const out = {
      model: encoder.model,
      spans: spans.map((s) => ({
        start: conv.toCodePoint(s.start),
        end: conv.toCodePoint(s.end),
        label: s.label,
        score: Number(s.score.toFixed(4)),
        text: text.slice(s.start, s.end),
        sentence: s.sentenceIndex,
        route: s.route,
      })),
    };
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  } finally {
    await encoder.close();
  }
}
