/**
 * The generative route's text contract: the prompt that lists a sentence's word
 * tokens one per line, the parsing of the model's answer (structured JSON or
 * `token<TAB>TAG` lines), and the realignment of that answer onto the input
 * tokens. Pure functions; the OpenAI adapter and the reference server share them.
 */
import { z } from 'zod';
import { ErrorCodes, LlmError } from '../../errors.js';
import type { TokenSpan } from '../../types.js';
import { decodeBio, splitTag } from '../bio.js';

/** One answered line: the token as the model wrote it and its tag (also the entry of the structured JSON answer). */
export const AnswerLineSchema = z.object({ token: z.string(), tag: z.string() });
export type AnswerLine = z.infer<typeof AnswerLineSchema>;

/** The same entry as a `[token, tag]` pair, which models write when not held to the schema. */
const AnswerPairSchema = z.tuple([z.string(), z.string()]);

/**
 * The JSON answer: `{"lines": [...]}` (what `answerSchema` asks for) or a bare
 * list. Entries are read one by one (see fromJson), so one bad entry costs only itself.
 */
export const AnswerJsonSchema = z.union([z.object({ lines: z.array(z.unknown()) }), z.array(z.unknown())]);
export type AnswerJson = z.infer<typeof AnswerJsonSchema>;

/** Where an answered tag sits in the answer text, as received (before fences and whitespace were stripped): UTF-16 [start, end). */
export interface TagRange {
  start: number;
  end: number;
}

export interface ParsedAnswer {
  lines: AnswerLine[];
  /** Per line, its tag's range in the content (for the tag's token logprobs); undefined where it cannot be placed. */
  tagRanges: Array<TagRange | undefined>;
  /** Lines (or JSON entries) that could not be read as token + tag. */
  malformed: number;
  format: 'json' | 'lines';
}

/** How far an answer strayed from the input; summed over sentences for telemetry. */
export interface RealignStats {
  /** Input tokens. */
  tokens: number;
  /** Input tokens matched to an answer line with the same text. */
  matched: number;
  /** Input tokens whose answer line has different text (the model changed the token); tagged O. */
  changed: number;
  /** Input tokens with no answer line at all (dropped, or the answer was cut short); tagged O. */
  dropped: number;
  /** Answer lines that match no input token (inserted, or the unmatched side of a reordering); ignored. */
  extra: number;
  /** Matched tokens whose tag is not one of the model's labels; tagged O. */
  invalidTags: number;
  /** Unreadable answer lines. */
  malformed: number;
}

export function emptyStats(): RealignStats {
  return { tokens: 0, matched: 0, changed: 0, dropped: 0, extra: 0, invalidTags: 0, malformed: 0 };
}

export function addStats(into: RealignStats, s: RealignStats): void {
  into.tokens += s.tokens;
  into.matched += s.matched;
  into.changed += s.changed;
  into.dropped += s.dropped;
  into.extra += s.extra;
  into.invalidTags += s.invalidTags;
  into.malformed += s.malformed;
}

/** Mismatches as the issue counts them: input tokens that did not get the model's tag for them. */
export function mismatches(s: RealignStats): number {
  return s.changed + s.dropped;
}

// ---------------------------------------------------------------- prompt

export const TOKENS_OPEN = '<tokens>';
export const TOKENS_CLOSE = '</tokens>';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/**
 * System + user messages for one sentence. The tokens sit one per line between
 * `<tokens>` and `</tokens>`: a word token never contains whitespace, and `<`
 * is punctuation and so always a token of its own, so the markers cannot occur
 * as a token line.
 */
export function buildMessages(tokens: readonly string[], labels: readonly string[]): ChatMessage[] {
  const system = [
    'You are a biomedical named-entity tagger.',
    `Tag every input token with exactly one of these BIO labels: ${labels.join(', ')}.`,
    'B-X starts an entity of type X, I-X continues it, O is outside any entity.',
    'Answer with one line per input token, in the input order, formatted as the token, a TAB, and its label. Copy each token exactly. Write nothing else.',
  ].join('\n');
  const user = `Tag these ${tokens.length} tokens:\n${TOKENS_OPEN}\n${tokens.join('\n')}\n${TOKENS_CLOSE}`;
  return [
    { role: 'system', content: system },
    { role: 'user', content: user },
  ];
}

/** The token lines of a prompt built by `buildMessages` (the last user message's `<tokens>` block); undefined when there is none. */
export function tokensFromMessages(messages: readonly ChatMessage[]): string[] | undefined {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m.role !== 'user') continue;
    return tokensFromText(m.content);
  }
  return undefined;
}

/** The lines between a `<tokens>` line and the last `</tokens>` line of a text (a completions prompt, a user message). */
export function tokensFromText(text: string): string[] | undefined {
  const lines = text.split('\n');
  const open = lines.indexOf(TOKENS_OPEN);
  const close = lines.lastIndexOf(TOKENS_CLOSE);
  if (open < 0 || close < open) return undefined;
  return lines.slice(open + 1, close);
}

/** JSON schema for vLLM `structured_outputs: {json: ...}`: `{"lines": [{"token": string, "tag": <label enum>}]}`. */
export function answerSchema(labels: readonly string[]): Record<string, unknown> {
  return {
    type: 'object',
    properties: {
      lines: {
        type: 'array',
        items: {
          type: 'object',
          properties: { token: { type: 'string' }, tag: { type: 'string', enum: [...labels] } },
          required: ['token', 'tag'],
          additionalProperties: false,
        },
      },
    },
    required: ['lines'],
    additionalProperties: false,
  };
}

/** The answer text for tagged tokens: `token\tTAG` lines, or the structured JSON. */
export function formatAnswer(lines: readonly AnswerLine[], structured: boolean): string {
  if (structured) return JSON.stringify({ lines: lines.map((l) => ({ token: l.token, tag: l.tag })) });
  return lines.map((l) => `${l.token}\t${l.tag}`).join('\n');
}

// ---------------------------------------------------------------- parsing

const JSON_STRING = '"(?:[^"\\\\]|\\\\.)*"';
// With match indices ('d'), so each entry's tag literal can be placed in the answer text.
const JSON_ENTRY = new RegExp(`\\{\\s*"token"\\s*:\\s*(${JSON_STRING})\\s*,\\s*"tag"\\s*:\\s*(${JSON_STRING})\\s*\\}`, 'dg');

/** The text inside a code fence (and where it starts), or the text itself. */
function stripFence(text: string): { text: string; offset: number } {
  const m = /^\s*```[a-zA-Z]*\s*\n([\s\S]*?)\n?```\s*$/d.exec(text);
  return m === null || m.indices?.[1] === undefined ? { text, offset: 0 } : { text: m[1], offset: m.indices[1][0] };
}

/** The content of a matched JSON string literal (quotes excluded), shifted into the answer's coordinates. */
function literalRange(m: RegExpMatchArray, group: number, base: number): TagRange | undefined {
  const at = m.indices?.[group];
  return at === undefined ? undefined : { start: base + at[0] + 1, end: base + at[1] - 1 };
}

/**
 * Places the tags of JSON lines read by JSON.parse: the {token, tag} entries
 * found in the text, in order, must be those lines exactly; otherwise (other
 * key order, extra fields, pairs) the lines stay unplaced and unscored.
 */
function placeJsonTags(text: string, lines: readonly AnswerLine[], base: number): Array<TagRange | undefined> {
  const none = lines.map((): TagRange | undefined => undefined);
  const found = [...text.matchAll(JSON_ENTRY)];
  if (found.length !== lines.length) return none;
  const ranges: Array<TagRange | undefined> = [];
  for (const [k, m] of found.entries()) {
    const range = literalRange(m, 2, base);
    if (range === undefined || jsonString(m[1])?.trim() !== lines[k].token || jsonString(m[2])?.trim() !== lines[k].tag) return none;
    ranges.push(range);
  }
  return ranges;
}

/** The entries of a JSON answer as lines; throws LLM_BAD_RESPONSE when it has no list or no entry is readable. */
function fromJson(value: unknown): Omit<ParsedAnswer, 'tagRanges'> {
  const answer = AnswerJsonSchema.safeParse(value);
  if (!answer.success) throw new LlmError(ErrorCodes.LLM_BAD_RESPONSE, 'the LLM answered JSON without a "lines" list of {token, tag}');
  const entries = Array.isArray(answer.data) ? answer.data : answer.data.lines;
  const lines: AnswerLine[] = [];
  let malformed = 0;
  let firstProblem = '';
  entries.forEach((e, i) => {
    const line = AnswerLineSchema.safeParse(e);
    if (line.success) {
      lines.push({ token: line.data.token.trim(), tag: line.data.tag.trim() });
      return;
    }
    const pair = AnswerPairSchema.safeParse(e);
    if (pair.success) {
      lines.push({ token: pair.data[0].trim(), tag: pair.data[1].trim() });
      return;
    }
    malformed++;
    // Names the field and the expected type only: the value may be note text.
    if (firstProblem === '') {
      const issue = line.error.issues[0];
      firstProblem = `entry ${i}${issue.path.length > 0 ? ` field "${issue.path.map(String).join('.')}"` : ''}: ${issue.message}`;
    }
  });
  if (lines.length === 0 && malformed > 0) {
    throw new LlmError(
      ErrorCodes.LLM_BAD_RESPONSE,
      `the LLM answered JSON whose ${malformed} "lines" entries hold no {token, tag} of strings (first: ${firstProblem})`,
    );
  }
  return { lines, malformed, format: 'json' };
}

/** A JSON string literal matched by JSON_ENTRY, decoded; undefined for a bad escape. */
function jsonString(literal: string): string | undefined {
  try {
    const v: unknown = JSON.parse(literal);
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads an answer: the structured JSON (`{"lines": [{token, tag}]}`, or a bare
 * array of such objects), else `token<TAB>TAG` lines (a line without a TAB is
 * split at its last run of spaces). Code fences around either are ignored.
 * Throws LLM_BAD_RESPONSE when nothing in it can be read.
 */
export function parseAnswer(content: string): ParsedAnswer {
  const fenced = stripFence(content);
  const text = fenced.text.trim();
  // Where `text` starts in `content`: tag ranges are given in the content as received.
  const base = fenced.offset + (fenced.text.length - fenced.text.trimStart().length);
  if (text.startsWith('{') || text.startsWith('[')) {
    let value: unknown;
    let json = true;
    try {
      value = JSON.parse(text);
    } catch {
      json = false;
    }
    if (json) {
      const parsed = fromJson(value);
      return { ...parsed, tagRanges: placeJsonTags(text, parsed.lines, base) };
    }
    // JSON cut short (max_tokens reached): keep the complete {token, tag} entries.
    const salvaged: AnswerLine[] = [];
    const salvagedRanges: Array<TagRange | undefined> = [];
    let undecodable = 0;
    for (const m of text.matchAll(JSON_ENTRY)) {
      const token = jsonString(m[1]);
      const tag = jsonString(m[2]);
      if (token === undefined || tag === undefined) undecodable++;
      else {
        salvaged.push({ token: token.trim(), tag: tag.trim() });
        salvagedRanges.push(literalRange(m, 2, base));
      }
    }
    if (salvaged.length === 0)
      throw new LlmError(ErrorCodes.LLM_BAD_RESPONSE, `the LLM answered ${text.length} characters of broken JSON with no complete {token, tag} entry`);
    // The cut-off tail counts as one unreadable entry.
    return { lines: salvaged, tagRanges: salvagedRanges, malformed: 1 + undecodable, format: 'json' };
  }
  const lines: AnswerLine[] = [];
  const tagRanges: Array<TagRange | undefined> = [];
  let malformed = 0;
  let lineStart = 0;
  for (const raw of text.split('\n')) {
    const at = base + lineStart;
    lineStart += raw.length + 1;
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '') continue;
    const tab = line.lastIndexOf('\t');
    let token: string;
    let tag: string;
    let tagStart: number;
    if (tab >= 0) {
      token = line.slice(0, tab).trim();
      const after = line.slice(tab + 1);
      tag = after.trim();
      tagStart = at + tab + 1 + (after.length - after.trimStart().length);
    } else {
      const trimmed = line.trim();
      const m = /^(\S.*?)\s+(\S+)$/.exec(trimmed);
      if (m === null) {
        malformed++;
        continue;
      }
      token = m[1];
      tag = m[2];
      tagStart = at + (line.length - line.trimStart().length) + trimmed.length - tag.length;
    }
    if (token === '' || tag === '' || /\s/.test(tag)) {
      malformed++;
      continue;
    }
    lines.push({ token, tag });
    tagRanges.push({ start: tagStart, end: tagStart + tag.length });
  }
  if (lines.length === 0) {
    throw new LlmError(ErrorCodes.LLM_BAD_RESPONSE, `the LLM answer has no token<TAB>TAG line (${malformed} unreadable line(s))`);
  }
  return { lines, tagRanges, malformed, format: 'lines' };
}

// ---------------------------------------------------------------- realignment

export interface Realigned {
  /** Label index per input token (into `labels`); unmatched tokens get `O`. */
  tags: number[];
  /** The answer line each input token took its tag from; -1 where none did (the token is `O`). */
  answerIndex: number[];
  stats: RealignStats;
}

/**
 * Longest common subsequence of two token lists (the matching blocks of
 * difflib, without its junk heuristics): pairs [i, j] in increasing order.
 */
export function lcsPairs(a: readonly string[], b: readonly string[]): Array<[number, number]> {
  const n = a.length;
  const m = b.length;
  if (n === 0 || m === 0) return [];
  // Trim a common prefix and suffix first: the usual answer matches almost everywhere.
  let pre = 0;
  while (pre < n && pre < m && a[pre] === b[pre]) pre++;
  let suf = 0;
  while (suf < n - pre && suf < m - pre && a[n - 1 - suf] === b[m - 1 - suf]) suf++;
  const pairs: Array<[number, number]> = [];
  for (let k = 0; k < pre; k++) pairs.push([k, k]);
  const an = n - pre - suf;
  const bm = m - pre - suf;
  if (an > 0 && bm > 0) {
    // dp[i][j] = LCS length of a[pre+i..] and b[pre+j..] (suffix form, so the walk goes forward).
    const w = bm + 1;
    const dp = new Uint32Array((an + 1) * w);
    for (let i = an - 1; i >= 0; i--) {
      for (let j = bm - 1; j >= 0; j--) {
        dp[i * w + j] = a[pre + i] === b[pre + j] ? dp[(i + 1) * w + j + 1] + 1 : Math.max(dp[(i + 1) * w + j], dp[i * w + j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < an && j < bm) {
      if (a[pre + i] === b[pre + j]) {
        pairs.push([pre + i, pre + j]);
        i++;
        j++;
      } else if (dp[(i + 1) * w + j] >= dp[i * w + j + 1]) i++;
      else j++;
    }
  }
  for (let k = suf; k > 0; k--) pairs.push([n - k, m - k]);
  return pairs;
}

/** The label index for an answered tag: exact, else case-insensitive; -1 when the model has no such label. */
function labelIndex(tag: string, labels: readonly string[], lower: Map<string, number>): number {
  const exact = labels.indexOf(tag);
  if (exact >= 0) return exact;
  return lower.get(tag.toLowerCase()) ?? -1;
}

/**
 * Puts the model's tags back on the input tokens. Tokens are matched by their
 * text along the longest common subsequence (so dropped, inserted and reordered
 * tokens cost only themselves); between two matches, input and answer tokens
 * left over pair up as "changed", the rest are "dropped" (input) or "extra"
 * (answer). Every input token without a matched answer, or whose tag is not a
 * label of the model, is `O`.
 */
export function realign(input: readonly string[], answer: readonly AnswerLine[], labels: readonly string[], malformed = 0): Realigned {
  const oIndex = Math.max(0, labels.indexOf('O'));
  const lower = new Map<string, number>();
  labels.forEach((l, k) => {
    if (!lower.has(l.toLowerCase())) lower.set(l.toLowerCase(), k);
  });
  const tags = new Array<number>(input.length).fill(oIndex);
  const answerIndex = new Array<number>(input.length).fill(-1);
  const stats: RealignStats = { ...emptyStats(), tokens: input.length, malformed };
  const pairs = lcsPairs(
    input,
    answer.map((l) => l.token),
  );
  let prevI = -1;
  let prevJ = -1;
  const gap = (i: number, j: number): void => {
    const inputLeft = i - prevI - 1;
    const answerLeft = j - prevJ - 1;
    const changed = Math.min(inputLeft, answerLeft);
    stats.changed += changed;
    stats.dropped += inputLeft - changed;
    stats.extra += answerLeft - changed;
  };
  for (const [i, j] of pairs) {
    gap(i, j);
    const k = labelIndex(answer[j].tag, labels, lower);
    if (k < 0) stats.invalidTags++;
    else {
      tags[i] = k;
      answerIndex[i] = j;
    }
    stats.matched++;
    prevI = i;
    prevJ = j;
  }
  gap(input.length, answer.length);
  return { tags, answerIndex, stats };
}

/**
 * Spans from realigned tags with the argmax + conlleval repair of bio.ts
 * (`I-X` after `O`, at the start or after another type opens a new entity).
 * Without `tagProbabilities` each span scores 1.0 (the answer carried no
 * probabilities); with them, a span scores the mean of its tokens' tag
 * probabilities (tokens without one are left out of the mean; none: 1.0).
 */
export function spansFromTags(tags: readonly number[], labels: readonly string[], tagProbabilities?: ReadonlyArray<number | undefined>): TokenSpan[] {
  const L = labels.length;
  const probs = new Float32Array(tags.length * L);
  tags.forEach((k, t) => {
    probs[t * L + k] = 1;
  });
  const spans = decodeBio(probs, tags.length, labels, 'argmax');
  if (tagProbabilities === undefined) return spans;
  return spans.map((s) => {
    let sum = 0;
    let n = 0;
    for (let t = s.first; t <= s.last; t++) {
      const p = tagProbabilities[t];
      if (p !== undefined && Number.isFinite(p)) {
        sum += p;
        n++;
      }
    }
    return n === 0 ? s : { ...s, score: sum / n };
  });
}

const EDGE_PUNCTUATION = /^\p{P}$/u;

/**
 * Tags of whole words spread onto the pipeline tokens each covers: `B-X` on
 * the first token and `I-X` on the rest (`X` when the label set has no
 * `I-X`), `I-X` and `O` on all of them. Punctuation tokens at either edge of
 * a tagged word (`(IL-2),` has `(` and `,`) stay `O`: whitespace words carry
 * the punctuation around them, entities do not. A word's probability goes to
 * each of its tokens.
 */
export function spreadWordTags(
  wordTags: readonly number[],
  first: readonly number[],
  last: readonly number[],
  tokenTexts: readonly string[],
  labels: readonly string[],
  wordProbabilities?: ReadonlyArray<number | undefined>,
): { tags: number[]; probabilities: Array<number | undefined> | undefined } {
  const oIndex = Math.max(0, labels.indexOf('O'));
  const tags = new Array<number>(tokenTexts.length).fill(oIndex);
  const probabilities = wordProbabilities === undefined ? undefined : new Array<number | undefined>(tokenTexts.length).fill(undefined);
  wordTags.forEach((k, w) => {
    let a = first[w];
    let b = last[w];
    if (k !== oIndex) {
      while (a < b && EDGE_PUNCTUATION.test(tokenTexts[a])) a++;
      while (b > a && EDGE_PUNCTUATION.test(tokenTexts[b])) b--;
    }
    const { prefix, type } = splitTag(labels[k]);
    const inside =
      prefix === 'B'
        ? labels.findIndex((l) => {
            const t = splitTag(l);
            return t.prefix === 'I' && t.type === type;
          })
        : k;
    for (let t = a; t <= b; t++) {
      tags[t] = t === a || inside < 0 ? k : inside;
      if (probabilities !== undefined) probabilities[t] = wordProbabilities?.[w];
    }
  });
  return { tags, probabilities };
}

/** BIO tags for spans over n tokens, named with the model's labels (`B-X`/`I-X` where it has them, else the bare type). */
export function tagsFromSpans(spans: readonly TokenSpan[], n: number, labels: readonly string[]): string[] {
  const has = new Set(labels);
  const out = new Array<string>(n).fill('O');
  for (const s of spans) {
    for (let t = s.first; t <= s.last; t++) {
      const bio = `${t === s.first ? 'B' : 'I'}-${s.label}`;
      if (has.has(bio)) out[t] = bio;
      else {
        // IO-style or BIOES-style label sets: fall back to any label of this type.
        const any =
          labels.find((l) => splitTag(l).type === s.label && splitTag(l).prefix === (t === s.first ? 'B' : 'I')) ??
          labels.find((l) => splitTag(l).type === s.label);
        out[t] = any ?? 'O';
      }
    }
  }
  return out;
}
