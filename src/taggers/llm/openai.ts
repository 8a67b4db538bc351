import { z } from 'zod';
import { ErrorCodes, LlmError, TaggerError } from '../../errors.js';
import type { Sentence, TokenSpan } from '../../types.js';
import { abortError } from '../token-classifier.js';
import type { ModelInfo, TagOptions, Tagger } from '../types.js';
import type { LlmHttpClient } from './http.js';
import { addStats, answerSchema, buildMessages, emptyStats, parseAnswer, realign, spansFromTags, type RealignStats } from './realign.js';

export interface OpenAiTaggerOptions {
  /** Sent as `model`; omitted when undefined (vLLM then uses its only served model). */
  model?: string;
  /** Send vLLM `structured_outputs: {json: <schema>}` so the answer is the JSON form. */
  structuredOutputs: boolean;
  /** Called once per sentence with its realignment counts (ids and counts only). */
  onRealign?: (stats: RealignStats) => void;
}

/**
 * The part of an OpenAI chat completion the tagger reads: the first choice's
 * message text. Further choices (n > 1) and every other field are not checked.
 */
export const ChatCompletionSchema = z.object({
  choices: z.tuple([z.object({ message: z.object({ content: z.string() }) })], z.unknown(), {
    error: (iss) => (iss.code === 'invalid_type' ? 'expected a list of choices' : undefined),
  }),
});
export type ChatCompletion = z.infer<typeof ChatCompletionSchema>;

/** The completion, or LLM_BAD_RESPONSE naming the first missing or mistyped field (never its value). */
export function readChatCompletion(value: unknown): ChatCompletion {
  const parsed = ChatCompletionSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const at = issue.path.length === 0 ? 'the answer' : issue.path.map(String).join('.');
  throw new LlmError(ErrorCodes.LLM_BAD_RESPONSE, `the chat completion has no choices[0].message.content string (${at}: ${issue.message})`);
}

/**
 * The generative route as vLLM serves it: one `POST /v1/chat/completions` per
 * sentence, the word tokens listed one per line, the answer read as
 * `token<TAB>TAG` lines or the structured JSON, realigned onto the input tokens
 * (see realign.ts) and repaired into valid BIO. Spans score 1.0.
 */
export class OpenAiChatTagger implements Tagger {
  readonly route = 'llm' as const;
  /** Realignment counts over every sentence tagged so far (for telemetry). */
  readonly stats: RealignStats = emptyStats();
  private readonly schema: Record<string, unknown>;
  private closed = false;

  constructor(
    readonly client: LlmHttpClient,
    readonly model: ModelInfo,
    readonly labels: readonly string[],
    private readonly options: OpenAiTaggerOptions,
  ) {
    this.schema = answerSchema(labels);
  }

  async tagSentences(sentences: readonly Sentence[], options: TagOptions = {}): Promise<TokenSpan[][]> {
    if (this.closed) throw new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, 'llm tagger is closed');
    if (options.signal?.aborted === true) throw abortError(options.signal);
    return Promise.all(sentences.map((s) => this.tagSentence(s, options.signal)));
  }

  private async tagSentence(sentence: Sentence, signal: AbortSignal | undefined): Promise<TokenSpan[]> {
    const tokens = sentence.tokens.map((t) => t.text);
    if (tokens.length === 0) return [];
    const body: Record<string, unknown> = {
      messages: buildMessages(tokens, this.labels),
      temperature: 0,
      // Room for every token line (a token, a tab, a label) plus the JSON punctuation when structured.
      max_tokens: 32 + tokens.length * (this.options.structuredOutputs ? 24 : 12),
    };
    if (this.options.model !== undefined) body.model = this.options.model;
    if (this.options.structuredOutputs) body.structured_outputs = { json: this.schema };
    const answer = readChatCompletion(await this.client.postJson('/v1/chat/completions', body, signal));
    const parsed = parseAnswer(answer.choices[0].message.content);
    const { tags, stats } = realign(tokens, parsed.lines, this.labels, parsed.malformed);
    addStats(this.stats, stats);
    try {
      this.options.onRealign?.(stats);
    } catch {
      // A telemetry callback never fails tagging.
    }
    return spansFromTags(tags, this.labels);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
