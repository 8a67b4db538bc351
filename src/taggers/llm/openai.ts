import { z } from 'zod';
import type { LLM_ENDPOINTS, STRUCTURED_OUTPUT_MODES, WORD_SPLITS } from '../../config/schema.js';
import { ErrorCodes, LlmError, TaggerError } from '../../errors.js';
import type { Sentence, TokenSpan } from '../../types.js';
import { abortError } from '../batch-queue.js';
import type { ModelInfo, TagOptions, Tagger } from '../types.js';
import type { LlmHttpClient } from './http.js';
import { ChatLogprobsSchema, CompletionLogprobsSchema, placeChatLogprobs, placeCompletionLogprobs, rangeProbability, type PlacedLogprob } from './logprobs.js';
import { answerRegex, DEFAULT_PROMPT, renderChat, renderCompletion, wordGroups, type PromptTemplates } from './prompt.js';
import { addStats, answerSchema, emptyStats, parseAnswer, realign, spansFromTags, spreadWordTags, type RealignStats } from './realign.js';

export type LlmEndpoint = (typeof LLM_ENDPOINTS)[number];
export type StructuredOutputMode = (typeof STRUCTURED_OUTPUT_MODES)[number];
export type WordSplit = (typeof WORD_SPLITS)[number];

/** The structured-output mode of a config value: `true` is json and `false` none, as the option was a boolean before. */
export function structuredMode(value: StructuredOutputMode | boolean): StructuredOutputMode {
  if (value === true) return 'json';
  if (value === false) return 'none';
  return value;
}

export interface OpenAiTaggerOptions {
  /** Sent as `model` (a served model or LoRA adapter name) unless a call names its own; omitted when neither does (vLLM then uses its only model). */
  model?: string;
  /** `chat`: POST /v1/chat/completions; `completions`: POST /v1/completions (a base model without a chat template). Default chat. */
  endpoint?: LlmEndpoint;
  /** vLLM `structured_outputs`: `{json: <schema>}`, `{regex: <one line per word>}`, or nothing. A boolean reads as json/none. */
  structuredOutputs: StructuredOutputMode | boolean;
  /** Words sent to the model: the pipeline's tokens, or whitespace-separated words (tags spread back onto tokens). Default pipeline. */
  wordSplit?: WordSplit;
  /** Prompt templates (llm.promptFile); default: the built-in prompt. */
  prompt?: PromptTemplates;
  /** Ask for token logprobs and score spans from them (default true); without them spans score 1.0. */
  logprobs?: boolean;
  /** Called once per sentence with its realignment counts (ids and counts only). */
  onRealign?: (stats: RealignStats) => void;
}

/** How span scores were obtained, summed over sentences (for calibration and telemetry). */
export interface ScoreStats {
  spans: number;
  /** Spans scored from the tag tokens' logprobs; the rest scored 1.0. */
  fromLogprobs: number;
  /** Answers that came without usable logprobs (none returned, or tokens that do not spell the answer). */
  answersWithoutLogprobs: number;
}

const choicesOf = <T extends z.ZodType>(choice: T) =>
  z.tuple([choice], z.unknown(), {
    error: (iss) => (iss.code === 'invalid_type' ? 'expected a list of choices' : undefined),
  });

/**
 * The part of an OpenAI chat completion the tagger reads: the first choice's
 * message text and its logprobs. Further choices (n > 1) and every other
 * field are not checked; logprobs are read on their own (a bad one only costs
 * the scores).
 */
export const ChatCompletionSchema = z.object({
  choices: choicesOf(z.object({ message: z.object({ content: z.string() }), logprobs: z.unknown().optional() })),
});
export type ChatCompletion = z.infer<typeof ChatCompletionSchema>;

/** The part of an OpenAI (legacy) completion the tagger reads: `choices[0].text` and its logprobs. */
export const TextCompletionSchema = z.object({
  choices: choicesOf(z.object({ text: z.string(), logprobs: z.unknown().optional() })),
});
export type TextCompletion = z.infer<typeof TextCompletionSchema>;

function badResponse(what: string, error: z.ZodError): LlmError {
  const issue = error.issues[0];
  const at = issue.path.length === 0 ? 'the answer' : issue.path.map(String).join('.');
  return new LlmError(ErrorCodes.LLM_BAD_RESPONSE, `${what} (${at}: ${issue.message})`);
}

/** The completion, or LLM_BAD_RESPONSE naming the first missing or mistyped field (never its value). */
export function readChatCompletion(value: unknown): ChatCompletion {
  const parsed = ChatCompletionSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  throw badResponse('the chat completion has no choices[0].message.content string', parsed.error);
}

/** The completion, or LLM_BAD_RESPONSE naming the first missing or mistyped field (never its value). */
export function readTextCompletion(value: unknown): TextCompletion {
  const parsed = TextCompletionSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  throw badResponse('the completion has no choices[0].text string', parsed.error);
}

/**
 * The generative route as vLLM serves it: one request per sentence, to
 * /v1/chat/completions or /v1/completions, the words listed by the prompt
 * templates, the answer read as `word<TAB>TAG` lines or the structured JSON
 * (held to a JSON schema or a regex by vLLM's structured outputs), realigned
 * onto the input words (see realign.ts), spread onto the pipeline tokens and
 * repaired into valid BIO. A span scores the mean probability of its words'
 * tags, read from the answer's token logprobs; 1.0 when the server sends none.
 */
export class OpenAiChatTagger implements Tagger {
  readonly route = 'llm' as const;
  /** Realignment counts over every sentence tagged so far (for telemetry). With wordSplit whitespace they count words. */
  readonly stats: RealignStats = emptyStats();
  readonly scoreStats: ScoreStats = { spans: 0, fromLogprobs: 0, answersWithoutLogprobs: 0 };
  readonly endpoint: LlmEndpoint;
  readonly structured: StructuredOutputMode;
  private readonly schema: Record<string, unknown>;
  private readonly prompt: PromptTemplates;
  private readonly split: WordSplit;
  private readonly logprobs: boolean;
  private closed = false;

  constructor(
    readonly client: LlmHttpClient,
    readonly model: ModelInfo,
    readonly labels: readonly string[],
    private readonly options: OpenAiTaggerOptions,
  ) {
    this.schema = answerSchema(labels);
    this.endpoint = options.endpoint ?? 'chat';
    this.structured = structuredMode(options.structuredOutputs);
    this.prompt = options.prompt ?? DEFAULT_PROMPT;
    this.split = options.wordSplit ?? 'pipeline';
    this.logprobs = options.logprobs ?? true;
  }

  async tagSentences(sentences: readonly Sentence[], options: TagOptions = {}): Promise<TokenSpan[][]> {
    if (this.closed) throw new TaggerError(ErrorCodes.TAGGER_UNAVAILABLE, 'llm tagger is closed');
    if (options.signal?.aborted === true) throw abortError(options.signal);
    return Promise.all(sentences.map((s) => this.tagSentence(s, options)));
  }

  /** The request body for one sentence's words (exported through the class for tests and docs). */
  requestBody(words: readonly string[], tokens: number, model: string | undefined): Record<string, unknown> {
    const body: Record<string, unknown> =
      this.endpoint === 'chat' ? { messages: renderChat(this.prompt, words, this.labels) } : { prompt: renderCompletion(this.prompt, words, this.labels) };
    body.temperature = 0;
    // Room for every token line (a token, a tab, a label) plus the JSON punctuation when structured; counted in pipeline tokens, which a whitespace word only joins.
    body.max_tokens = 32 + tokens * (this.structured === 'json' ? 24 : 12);
    if (model !== undefined) body.model = model;
    if (this.structured === 'json') body.structured_outputs = { json: this.schema };
    else if (this.structured === 'regex') body.structured_outputs = { regex: answerRegex(words, this.labels) };
    if (this.logprobs) {
      // The chosen token's logprob is all the score needs; one alternative is the smallest top list vLLM answers.
      if (this.endpoint === 'chat') {
        body.logprobs = true;
        body.top_logprobs = 1;
      } else body.logprobs = 1;
    }
    return body;
  }

  private async tagSentence(sentence: Sentence, options: TagOptions): Promise<TokenSpan[]> {
    const groups = wordGroups(sentence, this.split);
    const words = groups.words;
    if (words.length === 0) return [];
    const body = this.requestBody(words, sentence.tokens.length, options.model ?? this.options.model);
    let content: string;
    let placed: PlacedLogprob[] | undefined;
    if (this.endpoint === 'chat') {
      const choice = readChatCompletion(await this.client.postJson('/v1/chat/completions', body, options.signal)).choices[0];
      content = choice.message.content;
      const lp = ChatLogprobsSchema.safeParse(choice.logprobs);
      placed = this.logprobs && lp.success ? placeChatLogprobs(content, lp.data) : undefined;
    } else {
      const choice = readTextCompletion(await this.client.postJson('/v1/completions', body, options.signal)).choices[0];
      content = choice.text;
      const lp = CompletionLogprobsSchema.safeParse(choice.logprobs);
      placed = this.logprobs && lp.success ? placeCompletionLogprobs(content, lp.data) : undefined;
    }
    const parsed = parseAnswer(content);
    const { tags, answerIndex, stats } = realign(words, parsed.lines, this.labels, parsed.malformed);
    addStats(this.stats, stats);
    try {
      this.options.onRealign?.(stats);
    } catch {
      // A telemetry callback never fails tagging.
    }
    const wordProbabilities =
      placed === undefined
        ? undefined
        : answerIndex.map((j) => {
            const range = j < 0 ? undefined : parsed.tagRanges[j];
            return range === undefined ? undefined : rangeProbability(placed, range.start, range.end);
          });
    if (placed === undefined) this.scoreStats.answersWithoutLogprobs++;
    const spread =
      this.split === 'pipeline'
        ? { tags, probabilities: wordProbabilities }
        : spreadWordTags(
            tags,
            groups.first,
            groups.last,
            sentence.tokens.map((t) => t.text),
            this.labels,
            wordProbabilities,
          );
    const spans = spansFromTags(spread.tags, this.labels, spread.probabilities);
    this.scoreStats.spans += spans.length;
    if (spread.probabilities !== undefined) {
      const probs = spread.probabilities;
      for (const s of spans) {
        let any = false;
        for (let t = s.first; t <= s.last && !any; t++) any = probs[t] !== undefined;
        if (any) this.scoreStats.fromLogprobs++;
      }
    }
    return spans;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
