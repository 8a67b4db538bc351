/**
 * Token log-probabilities of a generated answer, placed on the answer text,
 * so that the probability of each answered tag can be read off: the tag's
 * characters are covered by one or more generated tokens, and the tag's
 * probability is the product of theirs (exp of the summed logprobs). A span's
 * score is then the mean of its words' tag probabilities, as the encoder's is
 * the mean of its words' label probabilities.
 */
import { z } from 'zod';

/** One generated token with its character range in the answer text. */
export interface PlacedLogprob {
  start: number;
  end: number;
  /** Natural log; null when the server gave none for this token. */
  logprob: number | null;
}

/** vLLM's chat `choices[0].logprobs`: one entry per generated token (`bytes` and `top_logprobs` are not read). */
export const ChatLogprobsSchema = z.object({
  content: z.array(z.object({ token: z.string(), logprob: z.number().nullable() })).nullable(),
});
export type ChatLogprobs = z.infer<typeof ChatLogprobsSchema>;

/** vLLM's completions `choices[0].logprobs`: parallel lists (`top_logprobs` is not read). */
export const CompletionLogprobsSchema = z.object({
  tokens: z.array(z.string()),
  token_logprobs: z.array(z.number().nullable()),
  text_offset: z.array(z.int()).optional(),
});
export type CompletionLogprobs = z.infer<typeof CompletionLogprobsSchema>;

/**
 * Places tokens on the text by their decoded text, one after the other.
 * Undefined when they do not spell the text (a token split inside a UTF-8
 * sequence decodes to U+FFFD, for example): the answer then has no scores.
 */
function placeByText(text: string, tokens: readonly string[], logprobs: ReadonlyArray<number | null>): PlacedLogprob[] | undefined {
  const out: PlacedLogprob[] = [];
  let at = 0;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (!text.startsWith(t, at)) return undefined;
    out.push({ start: at, end: at + t.length, logprob: logprobs[i] ?? null });
    at += t.length;
  }
  return at === text.length ? out : undefined;
}

export function placeChatLogprobs(content: string, logprobs: ChatLogprobs | null | undefined): PlacedLogprob[] | undefined {
  const items = logprobs?.content;
  if (items === null || items === undefined || items.length === 0) return undefined;
  return placeByText(
    content,
    items.map((i) => i.token),
    items.map((i) => i.logprob),
  );
}

/**
 * Completions tokens placed by their text; failing that, by `text_offset`
 * (counted from the first token: vLLM starts it at 0 without echo), each
 * token's text checked where the offset puts it.
 */
export function placeCompletionLogprobs(text: string, logprobs: CompletionLogprobs | null | undefined): PlacedLogprob[] | undefined {
  if (logprobs === null || logprobs === undefined || logprobs.tokens.length === 0 || logprobs.tokens.length !== logprobs.token_logprobs.length)
    return undefined;
  const byText = placeByText(text, logprobs.tokens, logprobs.token_logprobs);
  if (byText !== undefined) return byText;
  const offsets = logprobs.text_offset;
  if (offsets === undefined || offsets.length !== logprobs.tokens.length) return undefined;
  const base = offsets[0];
  const out: PlacedLogprob[] = [];
  for (let i = 0; i < offsets.length; i++) {
    const start = offsets[i] - base;
    const t = logprobs.tokens[i];
    if (start < 0 || text.slice(start, start + t.length) !== t) return undefined;
    out.push({ start, end: start + t.length, logprob: logprobs.token_logprobs[i] });
  }
  return out;
}

/**
 * Probability of the text in [start, end): the product of the probabilities
 * of the tokens that overlap it. Undefined when no token covers it or one of
 * them has no logprob.
 */
export function rangeProbability(placed: readonly PlacedLogprob[], start: number, end: number): number | undefined {
  if (!(end > start)) return undefined;
  let sum = 0;
  let any = false;
  // Tokens are in text order: a binary search for the first one ending after `start` keeps long answers linear.
  let lo = 0;
  let hi = placed.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (placed[mid].end <= start) lo = mid + 1;
    else hi = mid;
  }
  for (let i = lo; i < placed.length && placed[i].start < end; i++) {
    const p = placed[i];
    if (p.end <= start) continue;
    if (p.logprob === null) return undefined;
    sum += p.logprob;
    any = true;
  }
  return any ? Math.exp(sum) : undefined;
}
