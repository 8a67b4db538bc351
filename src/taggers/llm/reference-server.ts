import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { timingSafeEqual } from 'node:crypto';
import { loadOnnxModel } from '../encoder.js';
import { readApiKey } from './http.js';
import { formatAnswer, tokensFromMessages, tokensFromText, tagsFromSpans, type ChatMessage } from './realign.js';
import { parseAnswerRegex } from './prompt.js';
import { TokenClassifierTagger } from '../token-classifier.js';
import { ConfigError } from '../../errors.js';
import type { Sentence } from '../../types.js';
import { silentLogger, type Logger } from '../../telemetry/logger.js';
import { resolveExistingModelDir, type ModelBundle } from '../model-bundle.js';
import { GenerativeLlmTagger, isGenerativeBundle } from './generative.js';

export interface LlmServerOptions {
  modelDir: string;
  /** 0 picks a free port. */
  port: number;
  host?: string;
  /** When set, every request needs `Authorization: Bearer <key>` (read from this file). */
  apiKeyFile?: string;
  /** Served model name (default: the bundle's name). */
  servedName?: string;
  /**
   * More models served by the same server under their own names, as vLLM
   * serves LoRA adapters (`--lora-modules name=path`): name -> bundle
   * directory. A request's `model` field picks one.
   */
  loraModules?: Readonly<Record<string, string>>;
  logger?: Logger;
  /** Largest request body accepted (bytes). */
  maxBodyBytes?: number;
}

export interface LlmServerStats {
  requests: number;
  byPath: Record<string, number>;
  /** Generation and pooling requests per served model name. */
  byModel: Record<string, number>;
}

export interface LlmServer {
  /** e.g. http://127.0.0.1:40123 */
  url: string;
  port: number;
  /** The base model's served name. */
  model: string;
  /** Every served name, the base model first. */
  models: string[];
  stats: LlmServerStats;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const MAX_BODY = 4 * 1024 * 1024;

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new HttpError(413, `request body over ${limit} bytes`));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseJson(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new HttpError(400, 'request body is not JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new HttpError(400, 'request body must be a JSON object');
  return value as Record<string, unknown>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** OpenAI/vLLM error shape. Messages never quote the request. */
function sendError(res: ServerResponse, status: number, message: string): void {
  send(res, status, { error: { message, type: status >= 500 ? 'InternalServerError' : 'BadRequestError', code: status } });
}

/** One generated piece of the answer and, for a tag, which word it tags. */
interface Piece {
  text: string;
  /** Word index whose tag this piece is; undefined for text the format fixes (the copied word, TAB, JSON punctuation). */
  word?: number;
}

/** The answer as generated pieces; joined, they are exactly `formatAnswer`'s text. */
function answerPieces(lines: ReadonlyArray<{ token: string; tag: string }>, structured: boolean): Piece[] {
  const pieces: Piece[] = [];
  if (structured) {
    pieces.push({ text: '{"lines":[' });
    lines.forEach((l, i) => {
      pieces.push({ text: `${i === 0 ? '' : ','}{"token":${JSON.stringify(l.token)},"tag":"` });
      pieces.push({ text: JSON.stringify(l.tag).slice(1, -1), word: i });
      pieces.push({ text: '"}' });
    });
    pieces.push({ text: ']}' });
    return pieces;
  }
  lines.forEach((l, i) => {
    pieces.push({ text: l.token });
    pieces.push({ text: '\t' });
    pieces.push({ text: l.tag, word: i });
    if (i < lines.length - 1) pieces.push({ text: '\n' });
  });
  return pieces;
}

/** vLLM's floor for a logprob (it sends -9999.0 rather than -inf). */
const LOGPROB_FLOOR = -9999;
const logOf = (p: number): number => Math.max(LOGPROB_FLOOR, Math.log(p));

/**
 * One model behind the server: a generative decoder (the answer is generated,
 * tag by tag, constrained to the allowed labels) or a token classifier (the
 * answer is written from its per-word labels; it also answers /pooling).
 */
type Served =
  | { name: string; kind: 'generative'; tagger: GenerativeLlmTagger }
  | { name: string; kind: 'classifier'; tagger: TokenClassifierTagger; bundle: ModelBundle };

/** What the generation endpoints share: the words to tag, the format, the logprobs asked for. */
interface Generation {
  words: string[];
  /** Labels the answer may use (the regex's alternatives); undefined: every label of the model. */
  allowed: string[] | undefined;
  structured: 'json' | 'lines';
  /** Alternatives per token in top_logprobs; undefined: no logprobs asked for. */
  topLogprobs: number | undefined;
}

interface Generated {
  content: string;
  pieces: Piece[];
  /** Per piece: its logprob and its top alternatives as [text, logprob]. */
  logprobs: Array<{ logprob: number; top: Array<[string, number]> }>;
}

/**
 * The reference models (a generative decoder, models/<ds>-generative, or a
 * token classifier such as models/<ds>-decoder-classifier) behind the HTTP interfaces the
 * LLM adapters speak, in vLLM's request and response shapes, so they can be
 * run and tested against a real server:
 *
 * - `POST /v1/chat/completions` and `POST /v1/completions`: the words to tag
 *   are the lines of the `<tokens>` block (the last user message's, or the
 *   prompt's), or, with `structured_outputs: {regex}`, the words the pattern
 *   pins (the one-line-per-word pattern the openai adapter writes), since a
 *   constrained decoder can only write those. They are tagged in-process and
 *   answered as `word\tTAG` lines, or `{"lines": [{token, tag}]}` with
 *   `structured_outputs: {json}`. With `logprobs` (chat: `logprobs: true,
 *   top_logprobs: k`; completions: `logprobs: k`) each answered tag is one
 *   token whose logprob is the log of the model's probability for that tag
 *   (its top alternatives are the other labels); the copied word and the
 *   format's punctuation are tokens of logprob 0, as forced by the format.
 * - `POST /pooling` (`task: token_classify`): per-token logits for the ids (or
 *   text, tokenised with special tokens) sent, as vLLM answers them.
 * - `GET /v1/models`, `GET /health`.
 *
 * Several models can be served under their own names (`loraModules`), as
 * vLLM serves LoRA adapters; a request's `model` picks one.
 *
 * Logs carry request ids, paths, statuses, counts and timings only: prompts
 * hold note text.
 */
export async function startLlmServer(options: LlmServerOptions): Promise<LlmServer> {
  const logger = options.logger ?? silentLogger;
  const apiKey = await readApiKey(options.apiKeyFile, '--api-key-file');
  const load = async (name: string | undefined, dir: string): Promise<Served> => {
    const modelDir = await resolveExistingModelDir(dir);
    if (await isGenerativeBundle(modelDir)) {
      // Requests from concurrent callers are generated together, as vLLM batches them.
      const tagger = await GenerativeLlmTagger.load(modelDir, { batchSize: 32, batchWaitMs: 2 });
      return { name: name ?? tagger.model.id, kind: 'generative', tagger };
    }
    const { bundle, backend } = await loadOnnxModel(modelDir);
    const tagger = new TokenClassifierTagger('llm', bundle, backend, { batchSize: 32, batchWaitMs: 2, maxConcurrentBatches: 1, decode: 'viterbi' });
    return { name: name ?? tagger.model.id, kind: 'classifier', tagger, bundle };
  };
  const base = await load(options.servedName, options.modelDir);
  const served = new Map<string, Served>([[base.name, base]]);
  for (const [name, dir] of Object.entries(options.loraModules ?? {})) {
    if (served.has(name)) throw new ConfigError('--lora-modules', `the name "${name}" is served twice`);
    served.set(name, await load(name, dir));
  }
  const tagger = base.tagger;
  const name = base.name;
  const created = Math.floor(Date.now() / 1000);
  const stats: LlmServerStats = { requests: 0, byPath: {}, byModel: {} };
  const maxBody = options.maxBodyBytes ?? MAX_BODY;
  let counter = 0;

  const authorized = (req: IncomingMessage): boolean => {
    if (apiKey === undefined) return true;
    const header = req.headers.authorization ?? '';
    const expected = Buffer.from(`Bearer ${apiKey}`);
    const got = Buffer.from(header);
    return got.length === expected.length && timingSafeEqual(got, expected);
  };

  const modelFor = (body: Record<string, unknown>): Served => {
    const wanted = body.model;
    const found = wanted === undefined ? base : typeof wanted === 'string' ? served.get(wanted) : undefined;
    if (found === undefined) throw new HttpError(404, `the model does not exist; this server serves ${[...served.keys()].map((n) => `"${n}"`).join(', ')}`);
    stats.byModel[found.name] = (stats.byModel[found.name] ?? 0) + 1;
    return found;
  };

  /** The format, the words pinned by a regex (if any) and the logprobs asked for; refuses what it cannot honour, as vLLM would. */
  const generation = (body: Record<string, unknown>, promptWords: string[] | undefined, endpoint: 'chat' | 'completions'): Generation => {
    const so = body.structured_outputs;
    let structured: Generation['structured'] = 'lines';
    let words = promptWords;
    let allowed: string[] | undefined;
    if (so !== undefined && so !== null) {
      if (typeof so !== 'object' || Array.isArray(so)) throw new HttpError(400, 'structured_outputs must be an object');
      const keys = Object.keys(so).filter((k) => (so as Record<string, unknown>)[k] !== undefined && (so as Record<string, unknown>)[k] !== null);
      if (keys.length !== 1 || !['json', 'regex'].includes(keys[0]))
        throw new HttpError(400, 'structured_outputs: this server supports exactly one of json or regex');
      if (keys[0] === 'json') structured = 'json';
      else {
        const pattern = (so as Record<string, unknown>).regex;
        if (typeof pattern !== 'string') throw new HttpError(400, 'structured_outputs.regex must be a string');
        const pinned = parseAnswerRegex(pattern);
        if (pinned === undefined)
          throw new HttpError(
            400,
            'structured_outputs.regex: this server reads only the one-line-per-word pattern (word\\t(LABELS) lines) the openai adapter writes',
          );
        words = pinned.words;
        allowed = pinned.labels;
      }
    }
    if (words === undefined) throw new HttpError(400, `the ${endpoint === 'chat' ? 'last user message' : 'prompt'} has no <tokens> ... </tokens> block`);
    let topLogprobs: number | undefined;
    if (endpoint === 'chat') {
      if (body.logprobs === true) {
        const k = body.top_logprobs ?? 0;
        if (!Number.isInteger(k) || (k as number) < 0 || (k as number) > 20) throw new HttpError(400, 'top_logprobs must be an integer in 0..20');
        topLogprobs = k as number;
      } else if (body.top_logprobs !== undefined && body.top_logprobs !== null) throw new HttpError(400, 'top_logprobs needs logprobs: true');
    } else if (body.logprobs !== undefined && body.logprobs !== null) {
      if (!Number.isInteger(body.logprobs) || (body.logprobs as number) < 0 || (body.logprobs as number) > 20)
        throw new HttpError(400, 'logprobs must be an integer in 0..20');
      topLogprobs = body.logprobs as number;
    }
    return { words, allowed, structured, topLogprobs };
  };

  /** Tags the words in-process: the answer text, its pieces and their logprobs. */
  const generate = async (model: Served, g: Generation): Promise<Generated> => {
    const labels = model.tagger.labels;
    const L = labels.length;
    let tags: string[] = [];
    let probs: Float32Array = new Float32Array(0);
    if (g.words.length > 0 && model.kind === 'generative') {
      // The constraint is applied while generating, as structured outputs do: every tag is chosen among the allowed labels.
      const [tagged] = await model.tagger.tagWords([g.words], undefined, g.allowed);
      probs = tagged.probs;
      tags = Array.from(tagged.tags, (k) => labels[k]);
    } else if (g.words.length > 0 && model.kind === 'classifier') {
      let offset = 0;
      const sentence: Sentence = {
        index: 0,
        start: 0,
        end: 0,
        tokens: g.words.map((t) => {
          const tok = { text: t, start: offset, end: offset + t.length };
          offset += t.length + 1;
          return tok;
        }),
      };
      sentence.end = Math.max(0, offset - 1);
      const [tagged] = await model.tagger.tagSentencesWithProbabilities([sentence]);
      probs = tagged.probs;
      tags = tagsFromSpans(tagged.spans, g.words.length, labels);
      if (g.allowed !== undefined) {
        // The constraint wins: where the model's tag is not allowed, the most probable allowed label is written.
        const allowed = g.allowed;
        tags = tags.map((tag, w) => {
          if (allowed.includes(tag)) return tag;
          let best = allowed[0];
          let bestP = -1;
          for (const l of allowed) {
            const k = labels.indexOf(l);
            const p = k < 0 ? 0 : probs[w * L + k];
            if (p > bestP) [best, bestP] = [l, p];
          }
          return best;
        });
      }
    }
    const lines = g.words.map((t, i) => ({ token: t, tag: tags[i] }));
    const content = formatAnswer(lines, g.structured === 'json');
    const pieces = answerPieces(lines, g.structured === 'json');
    const k = g.topLogprobs ?? 0;
    const logprobs = pieces.map((piece) => {
      if (piece.word === undefined) return { logprob: 0, top: k > 0 ? [[piece.text, 0] as [string, number]] : [] };
      const w = piece.word;
      const chosen = labels.indexOf(lines[w].tag);
      const p = chosen < 0 ? 0 : probs[w * L + chosen];
      const ranked = labels.map((l, j) => [l, logOf(probs[w * L + j])] as [string, number]).sort((a, b) => b[1] - a[1]);
      return { logprob: logOf(p), top: ranked.slice(0, k) };
    });
    if (content !== pieces.map((p) => p.text).join('')) throw new Error('serve-llm: answer pieces do not spell the answer');
    return { content, pieces, logprobs };
  };

  const bytesOf = (text: string): number[] => Array.from(Buffer.from(text, 'utf8'));

  const countTokens = (model: Served, text: string): number =>
    model.kind === 'generative' ? model.tagger.decoder.countTokens(text) : model.tagger.encodeText(text).length;
  const usage = (model: Served, promptTexts: readonly string[], content: string): Record<string, number> => {
    const promptTokens = promptTexts.reduce((n, t) => n + countTokens(model, t), 0);
    const completionTokens = content === '' ? 0 : countTokens(model, content);
    return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
  };

  const chat = async (body: Record<string, unknown>): Promise<{ answer: unknown; tokens: number }> => {
    const model = modelFor(body);
    const messages = body.messages;
    if (!Array.isArray(messages) || messages.some((m) => m === null || typeof m !== 'object' || typeof (m as ChatMessage).content !== 'string')) {
      throw new HttpError(400, 'messages must be a list of {role, content} with string content');
    }
    const g = generation(body, tokensFromMessages(messages as ChatMessage[]), 'chat');
    const out = await generate(model, g);
    const logprobs =
      g.topLogprobs === undefined
        ? null
        : {
            content: out.pieces.map((piece, i) => ({
              token: piece.text,
              logprob: out.logprobs[i].logprob,
              bytes: bytesOf(piece.text),
              top_logprobs: out.logprobs[i].top.map(([t, lp]) => ({ token: t, logprob: lp, bytes: bytesOf(t) })),
            })),
          };
    return {
      tokens: g.words.length,
      answer: {
        id: `chatcmpl-${++counter}`,
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model: model.name,
        choices: [{ index: 0, message: { role: 'assistant', content: out.content }, logprobs, finish_reason: 'stop' }],
        usage: usage(
          model,
          (messages as ChatMessage[]).map((m) => m.content),
          out.content,
        ),
      },
    };
  };

  const completions = async (body: Record<string, unknown>): Promise<{ answer: unknown; tokens: number }> => {
    const model = modelFor(body);
    const prompt = Array.isArray(body.prompt) && body.prompt.length === 1 ? body.prompt[0] : body.prompt;
    if (typeof prompt !== 'string') throw new HttpError(400, 'prompt must be a string (this server answers one prompt per request)');
    if (body.echo === true) throw new HttpError(400, 'echo is not supported by this server');
    const g = generation(body, tokensFromText(prompt), 'completions');
    const out = await generate(model, g);
    let logprobs: Record<string, unknown> | null = null;
    if (g.topLogprobs !== undefined) {
      const offsets: number[] = [];
      let at = 0;
      for (const piece of out.pieces) {
        offsets.push(at);
        at += piece.text.length;
      }
      logprobs = {
        text_offset: offsets,
        token_logprobs: out.logprobs.map((l) => l.logprob),
        tokens: out.pieces.map((p) => p.text),
        top_logprobs: out.logprobs.map((l) => Object.fromEntries(l.top)),
      };
    }
    return {
      tokens: g.words.length,
      answer: {
        id: `cmpl-${++counter}`,
        object: 'text_completion',
        created: Math.floor(Date.now() / 1000),
        model: model.name,
        choices: [{ index: 0, text: out.content, logprobs, finish_reason: 'stop', stop_reason: null }],
        usage: usage(model, [prompt], out.content),
      },
    };
  };

  const rowsOf = (model: Served & { kind: 'classifier' }, input: unknown): number[][] => {
    const { tagger, bundle } = model;
    const isIds = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => Number.isInteger(x));
    let rows: number[][];
    if (typeof input === 'string') rows = [tagger.encodeText(input)];
    else if (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === 'string')) rows = (input as string[]).map((t) => tagger.encodeText(t));
    else if (isIds(input) && input.length > 0) rows = [input];
    else if (Array.isArray(input) && input.length > 0 && input.every(isIds)) rows = input as number[][];
    else throw new HttpError(400, 'input must be text, a list of texts, a list of token ids, or a list of such lists');
    for (const ids of rows) {
      if (ids.length === 0) throw new HttpError(400, 'an input has no tokens');
      if (ids.length > tagger.maxSequenceLength)
        throw new HttpError(400, `an input has ${ids.length} tokens; this model takes at most ${tagger.maxSequenceLength}`);
      if (ids.some((id) => id < 0 || bundle.tokenizer.id_to_token(id) === undefined))
        throw new HttpError(400, 'an input holds a token id outside the vocabulary');
    }
    return rows;
  };

  const pooling = async (body: Record<string, unknown>): Promise<{ answer: unknown; tokens: number }> => {
    const model = modelFor(body);
    if (model.kind !== 'classifier')
      throw new HttpError(400, `the model "${model.name}" is a generative decoder; /pooling token_classify needs a token-classification model`);
    if (body.task !== undefined && body.task !== 'token_classify')
      throw new HttpError(400, `task "${String(body.task)}" is not supported; this server does token_classify`);
    const rows = rowsOf(model, body.input);
    const logits = await model.tagger.logits(rows);
    const L = model.tagger.labels.length;
    const tokens = rows.reduce((n, r) => n + r.length, 0);
    return {
      tokens,
      answer: {
        id: `pool-${++counter}`,
        object: 'list',
        created: Math.floor(Date.now() / 1000),
        model: model.name,
        data: logits.map((row, index) => ({
          index,
          object: 'pooling',
          data: Array.from({ length: rows[index].length }, (_, p) => Array.from(row.subarray(p * L, (p + 1) * L))),
        })),
        usage: { prompt_tokens: tokens, total_tokens: tokens, completion_tokens: 0 },
      },
    };
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const started = performance.now();
    const id = ++counter;
    const path = (req.url ?? '/').split('?')[0];
    stats.requests++;
    stats.byPath[path] = (stats.byPath[path] ?? 0) + 1;
    let status = 200;
    let tokens = 0;
    try {
      if (!authorized(req)) throw new HttpError(401, 'missing or wrong API key');
      const route = `${req.method ?? 'GET'} ${path}`;
      switch (route) {
        case 'GET /health':
          send(res, 200, { status: 'ok' });
          break;
        case 'GET /v1/models':
          // As vLLM lists them: the base model, then each adapter with the base as its parent.
          send(res, 200, {
            object: 'list',
            data: [...served.values()].map((m) => ({
              id: m.name,
              object: 'model',
              created,
              owned_by: 'bioner-router',
              root: m.name,
              parent: m === base ? null : base.name,
              max_model_len: m.tagger.maxSequenceLength,
            })),
          });
          break;
        case 'POST /v1/chat/completions': {
          const out = await chat(parseJson(await readBody(req, maxBody)));
          tokens = out.tokens;
          send(res, 200, out.answer);
          break;
        }
        case 'POST /v1/completions': {
          const out = await completions(parseJson(await readBody(req, maxBody)));
          tokens = out.tokens;
          send(res, 200, out.answer);
          break;
        }
        case 'POST /pooling': {
          const out = await pooling(parseJson(await readBody(req, maxBody)));
          tokens = out.tokens;
          send(res, 200, out.answer);
          break;
        }
        default:
          throw new HttpError(['/health', '/v1/models', '/v1/chat/completions', '/v1/completions', '/pooling'].includes(path) ? 405 : 404, `no route ${route}`);
      }
    } catch (err) {
      status = err instanceof HttpError ? err.status : 500;
      if (!res.headersSent) sendError(res, status, err instanceof HttpError ? err.message : 'internal error');
      if (status >= 500) logger.error('serve-llm request failed', { requestId: id, path, error: err instanceof Error ? err.name : 'unknown' });
    } finally {
      logger.debug('serve-llm request', { requestId: id, method: req.method, path, status, tokens, ms: Number((performance.now() - started).toFixed(1)) });
    }
  };

  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    void handle(req, res);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  logger.info('serve-llm listening', { port: address.port, model: name, models: served.size, labels: tagger.labels.length });

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      // Stop accepting, let in-flight requests answer (bounded), then drop what is left and release the model.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const grace = setTimeout(() => {
        for (const s of sockets) s.destroy();
      }, 5000);
      await closed;
      clearTimeout(grace);
      for (const m of served.values()) await m.tagger.close();
      logger.info('serve-llm closed', { requests: stats.requests });
    })();
    return closing;
  };
  return { url, port: address.port, model: name, models: [...served.keys()], stats, close };
}
