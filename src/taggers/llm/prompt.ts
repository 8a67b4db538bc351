/**
 * The generative route's request text: prompt templates (llm.promptFile), the
 * word split sent to the model (llm.wordSplit), and the regex that pins the
 * answer to one `token<TAB>TAG` line per input word (llm.structuredOutputs:
 * regex). Pure functions; the adapter and the reference server share them.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../../errors.js';
import type { Sentence } from '../../types.js';
import type { ChatMessage } from './realign.js';

/** The placeholders a template may use; anything else in `{{...}}` is refused at start-up (a typo would otherwise go to the model). */
export const PROMPT_PLACEHOLDERS = ['labels', 'count', 'tokens', 'text', 'system', 'user'] as const;
export type PromptPlaceholder = (typeof PROMPT_PLACEHOLDERS)[number];

export interface PromptTemplates {
  /** Chat: the system message ('' sends none). */
  system: string;
  /** Chat: the user message. */
  user: string;
  /** Completions: the whole prompt; `{{system}}` and `{{user}}` are the two rendered templates above. */
  completion: string;
}

/**
 * Today's prompt, placeholder for placeholder: rendering it gives exactly the
 * messages the adapter has always sent (a unit test holds it to that).
 */
export const DEFAULT_PROMPT: PromptTemplates = {
  system: [
    'You are a biomedical named-entity tagger.',
    'Tag every input token with exactly one of these BIO labels: {{labels}}.',
    'B-X starts an entity of type X, I-X continues it, O is outside any entity.',
    'Answer with one line per input token, in the input order, formatted as the token, a TAB, and its label. Copy each token exactly. Write nothing else.',
  ].join('\n'),
  user: 'Tag these {{count}} tokens:\n<tokens>\n{{tokens}}\n</tokens>',
  // A base model has no chat template: the two parts, then where its answer starts.
  completion: '{{system}}\n\n{{user}}\n\nAnswer:\n',
};

/** A prompt file: YAML or JSON with any of the three templates; the others keep their defaults. */
export const PromptFileSchema = z
  .object({
    system: z.string().optional(),
    user: z.string().min(1).optional(),
    completion: z.string().min(1).optional(),
  })
  .strict();

const PLACEHOLDER = /\{\{\s*([A-Za-z_]+)\s*\}\}/g;

function checkPlaceholders(name: keyof PromptTemplates, template: string, file: string): void {
  for (const m of template.matchAll(PLACEHOLDER)) {
    const key = m[1];
    const allowed: readonly string[] = name === 'completion' ? PROMPT_PLACEHOLDERS : PROMPT_PLACEHOLDERS.filter((p) => p !== 'system' && p !== 'user');
    if (!allowed.includes(key))
      throw new ConfigError(
        'llm.promptFile',
        `${file}: "${name}" uses the unknown placeholder {{${key}}} (known: ${allowed.map((p) => `{{${p}}}`).join(', ')})`,
      );
  }
}

/** The templates of llm.promptFile, or the defaults when it is unset. */
export async function loadPromptTemplates(file: string | undefined): Promise<PromptTemplates> {
  if (file === undefined) return DEFAULT_PROMPT;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError('llm.promptFile', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError('llm.promptFile', `${file} is not YAML or JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  const parsed = PromptFileSchema.safeParse(raw ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const at = issue.path.length === 0 ? 'the file' : issue.path.map(String).join('.');
    throw new ConfigError(
      'llm.promptFile',
      `${file}: ${at}: ${issue.code === 'unrecognized_keys' ? `unknown key(s) ${issue.keys.join(', ')}; expected system, user, completion` : issue.message}`,
    );
  }
  const templates: PromptTemplates = { ...DEFAULT_PROMPT, ...parsed.data };
  for (const name of ['system', 'user', 'completion'] as const) checkPlaceholders(name, templates[name], file);
  return templates;
}

/** One pass over the template, so placeholder-like text inside a token is never substituted. */
function render(template: string, values: Readonly<Partial<Record<PromptPlaceholder, string>>>): string {
  return template.replace(PLACEHOLDER, (whole, key: string) => values[key as PromptPlaceholder] ?? whole);
}

function baseValues(tokens: readonly string[], labels: readonly string[]): Record<'labels' | 'count' | 'tokens' | 'text', string> {
  return { labels: labels.join(', '), count: String(tokens.length), tokens: tokens.join('\n'), text: tokens.join(' ') };
}

/** Chat messages for one sentence's words (a system message only when its template renders non-empty). */
export function renderChat(templates: PromptTemplates, tokens: readonly string[], labels: readonly string[]): ChatMessage[] {
  const values = baseValues(tokens, labels);
  const system = render(templates.system, values);
  const user = render(templates.user, values);
  return system === ''
    ? [{ role: 'user', content: user }]
    : [
        { role: 'system', content: system },
        { role: 'user', content: user },
      ];
}

/** The completions prompt for one sentence's words. */
export function renderCompletion(templates: PromptTemplates, tokens: readonly string[], labels: readonly string[]): string {
  const values = baseValues(tokens, labels);
  return render(templates.completion, { ...values, system: render(templates.system, values), user: render(templates.user, values) });
}

// ---------------------------------------------------------------- word split

/** The words sent to the model and the pipeline tokens each covers (`first..last`, inclusive). */
export interface WordGroups {
  words: string[];
  first: number[];
  last: number[];
}

/**
 * `pipeline`: one word per pipeline token (the BERT-style split). `whitespace`:
 * pipeline tokens with nothing between them in the original text are joined
 * into one word, so `IL-2` goes as one word instead of `IL`, `-`, `2`. Offsets
 * never change: tags come back per word and are spread onto its tokens.
 */
export function wordGroups(sentence: Sentence, split: 'pipeline' | 'whitespace'): WordGroups {
  const tokens = sentence.tokens;
  if (split === 'pipeline') return { words: tokens.map((t) => t.text), first: tokens.map((_, i) => i), last: tokens.map((_, i) => i) };
  const out: WordGroups = { words: [], first: [], last: [] };
  for (let i = 0; i < tokens.length; i++) {
    if (i > 0 && tokens[i - 1].end === tokens[i].start) {
      const w = out.words.length - 1;
      out.words[w] += tokens[i].text;
      out.last[w] = i;
    } else {
      out.words.push(tokens[i].text);
      out.first.push(i);
      out.last.push(i);
    }
  }
  return out;
}

// ---------------------------------------------------------------- regex structured output

/** Escapes every regex metacharacter, so a word is matched as itself (vLLM's regex engines and JavaScript read `\X` the same way). */
export function escapeRegex(text: string): string {
  return text.replace(/[\\^$.|?*+()[\]{}]/g, '\\$&');
}

/**
 * The `structured_outputs: {regex}` pattern: exactly one `word<TAB>TAG` line per
 * input word, in order, each TAG one of the labels, lines joined by `\n`.
 * Nothing else can be generated, which keeps a model fine-tuned on lines in
 * its own format.
 */
export function answerRegex(words: readonly string[], labels: readonly string[]): string {
  const tags = `(${labels.map(escapeRegex).join('|')})`;
  return words.map((w) => `${escapeRegex(w)}\\t${tags}`).join('\\n');
}

/**
 * The words and label choices back from a pattern `answerRegex` wrote (the
 * reference server tags what the constraint pins, as a constrained decoder
 * would); undefined for any other pattern.
 */
export function parseAnswerRegex(pattern: string): { words: string[]; labels: string[] } | undefined {
  const words: string[] = [];
  let labels: string[] | undefined;
  let i = 0;
  const literal = (): string | undefined => {
    let out = '';
    while (i < pattern.length) {
      const c = pattern[i];
      if (c === '\\') {
        const next = pattern[i + 1];
        if (next === undefined) return undefined;
        if (next === 't' || next === 'n') return out; // the TAB or newline separator ends the literal
        out += next;
        i += 2;
      } else if ('^$.|?*+()[]{}'.includes(c)) return out;
      else {
        out += c;
        i++;
      }
    }
    return out;
  };
  while (i < pattern.length) {
    const word = literal();
    if (word === undefined || word === '' || pattern.slice(i, i + 3) !== '\\t(') return undefined;
    i += 3;
    const close = groupEnd(pattern, i);
    if (close < 0) return undefined;
    const choices = splitAlternatives(pattern.slice(i, close));
    if (choices === undefined) return undefined;
    if (labels === undefined) labels = choices;
    else if (choices.join('\n') !== labels.join('\n')) return undefined;
    words.push(word);
    i = close + 1;
    if (i === pattern.length) break;
    if (pattern.slice(i, i + 2) !== '\\n') return undefined;
    i += 2;
  }
  return words.length === 0 || labels === undefined ? undefined : { words, labels };
}

function groupEnd(pattern: string, from: number): number {
  for (let i = from; i < pattern.length; i++) {
    if (pattern[i] === '\\') i++;
    else if (pattern[i] === ')') return i;
    else if (pattern[i] === '(') return -1;
  }
  return -1;
}

function splitAlternatives(group: string): string[] | undefined {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < group.length; i++) {
    const c = group[i];
    if (c === '\\') {
      if (i + 1 >= group.length) return undefined;
      cur += group[++i];
    } else if (c === '|') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out.every((l) => l !== '') ? out : undefined;
}
