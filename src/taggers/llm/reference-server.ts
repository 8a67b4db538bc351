import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { timingSafeEqual } from 'node:crypto';
import { loadOnnxModel } from '../encoder.js';
import { readApiKey } from './http.js';
import { formatAnswer, tokensFromMessages, tagsFromSpans, type ChatMessage } from './realign.js';
import { TokenClassifierTagger } from '../token-classifier.js';
import type { Sentence } from '../../types.js';
import { silentLogger, type Logger } from '../../telemetry/logger.js';
import { resolveExistingModelDir } from '../model-bundle.js';

export interface LlmServerOptions {
  modelDir: string;
  /** 0 picks a free port. */
  port: number;
  host?: string;
  /** When set, every request needs `Authorization: Bearer <key>` (read from this file). */
  apiKeyFile?: string;
  /** Served model name (default: the bundle's name). */
  servedName?: string;
  logger?: Logger;
  /** Largest request body accepted (bytes). */
  maxBodyBytes?: number;
}

export interface LlmServerStats {
  requests: number;
  byPath: Record<string, number>;
}

export interface LlmServer {
  /** e.g. http://127.0.0.1:40123 */
  url: string;
  port: number;
  model: string;
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

/**
 * The reference decoder (models/<ds>-llm) behind the two HTTP interfaces the
 * LLM adapters speak, so they can be run and tested against a real server:
 *
 * - `POST /v1/chat/completions`: reads the token lines of the last user message
 *   (the `<tokens>` block the openai adapter writes), tags them in-process and
 *   answers `token\tTAG` lines, or `{"lines": [{token, tag}]}` when
 *   `structured_outputs` is sent, as `choices[0].message.content` with `usage`.
 * - `POST /pooling` (`task: token_classify`): per-token logits for the ids (or
 *   text, tokenised with special tokens) sent, as vLLM answers them.
 * - `GET /v1/models`, `GET /health`.
 *
 * Logs carry request ids, paths, statuses, counts and timings only: prompts
 * hold note text.
 */
export async function startLlmServer(options: LlmServerOptions): Promise<LlmServer> {
  const logger = options.logger ?? silentLogger;
  const modelDir = await resolveExistingModelDir(options.modelDir);
  const apiKey = await readApiKey(options.apiKeyFile, '--api-key-file');
  const { bundle, backend } = await loadOnnxModel(modelDir);
  const tagger = new TokenClassifierTagger('llm', bundle, backend, { batchSize: 32, batchWaitMs: 2, maxConcurrentBatches: 1, decode: 'viterbi' });
  const name = options.servedName ?? tagger.model.id;
  const created = Math.floor(Date.now() / 1000);
  const stats: LlmServerStats = { requests: 0, byPath: {} };
  const maxBody = options.maxBodyBytes ?? MAX_BODY;
  let counter = 0;

  const authorized = (req: IncomingMessage): boolean => {
    if (apiKey === undefined) return true;
    const header = req.headers.authorization ?? '';
    const expected = Buffer.from(`Bearer ${apiKey}`);
    const got = Buffer.from(header);
    return got.length === expected.length && timingSafeEqual(got, expected);
  };

  const checkModel = (body: Record<string, unknown>): void => {
    if (body.model !== undefined && body.model !== name) throw new HttpError(404, `the model does not exist; this server serves "${name}"`);
  };

  const chat = async (body: Record<string, unknown>): Promise<{ answer: unknown; tokens: number }> => {
    checkModel(body);
    const messages = body.messages;
    if (!Array.isArray(messages) || messages.some((m) => m === null || typeof m !== 'object' || typeof (m as ChatMessage).content !== 'string')) {
      throw new HttpError(400, 'messages must be a list of {role, content} with string content');
    }
    const tokens = tokensFromMessages(messages as ChatMessage[]);
    if (tokens === undefined) throw new HttpError(400, 'the last user message has no <tokens> ... </tokens> block');
    const structured = body.structured_outputs !== undefined && body.structured_outputs !== null;
    let tags: string[] = [];
    if (tokens.length > 0) {
      let offset = 0;
      const sentence: Sentence = {
        index: 0,
        start: 0,
        end: 0,
        tokens: tokens.map((t) => {
          const tok = { text: t, start: offset, end: offset + t.length };
          offset += t.length + 1;
          return tok;
        }),
      };
      sentence.end = Math.max(0, offset - 1);
      const [spans] = await tagger.tagSentences([sentence]);
      tags = tagsFromSpans(spans, tokens.length, tagger.labels);
    }
    const content = formatAnswer(tokens.map((t, i) => ({ token: t, tag: tags[i] })), structured);
    const promptTokens = (messages as ChatMessage[]).reduce((n, m) => n + tagger.encodeText(m.content).length, 0);
    const completionTokens = content === '' ? 0 : tagger.encodeText(content).length;
    return {
      tokens: tokens.length,
      answer: {
        id: `chatcmpl-${++counter}`,
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model: name,
        choices: [{ index: 0, message: { role: 'assistant', content }, logprobs: null, finish_reason: 'stop' }],
        usage: { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens },
      },
    };
  };

  const rowsOf = (input: unknown): number[][] => {
    const isIds = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => Number.isInteger(x));
    let rows: number[][];
    if (typeof input === 'string') rows = [tagger.encodeText(input)];
    else if (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === 'string')) rows = (input as string[]).map((t) => tagger.encodeText(t));
    else if (isIds(input) && input.length > 0) rows = [input];
    else if (Array.isArray(input) && input.length > 0 && input.every(isIds)) rows = input as number[][];
    else throw new HttpError(400, 'input must be text, a list of texts, a list of token ids, or a list of such lists');
    for (const ids of rows) {
      if (ids.length === 0) throw new HttpError(400, 'an input has no tokens');
      if (ids.length > tagger.maxSequenceLength) throw new HttpError(400, `an input has ${ids.length} tokens; this model takes at most ${tagger.maxSequenceLength}`);
      if (ids.some((id) => id < 0 || bundle.tokenizer.id_to_token(id) === undefined)) throw new HttpError(400, 'an input holds a token id outside the vocabulary');
    }
    return rows;
  };

  const pooling = async (body: Record<string, unknown>): Promise<{ answer: unknown; tokens: number }> => {
    checkModel(body);
    if (body.task !== undefined && body.task !== 'token_classify') throw new HttpError(400, `task "${String(body.task)}" is not supported; this server does token_classify`);
    const rows = rowsOf(body.input);
    const logits = await tagger.logits(rows);
    const L = tagger.labels.length;
    const tokens = rows.reduce((n, r) => n + r.length, 0);
    return {
      tokens,
      answer: {
        id: `pool-${++counter}`,
        object: 'list',
        created: Math.floor(Date.now() / 1000),
        model: name,
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
          send(res, 200, { object: 'list', data: [{ id: name, object: 'model', created, owned_by: 'bioner-router', root: name, max_model_len: tagger.maxSequenceLength }] });
          break;
        case 'POST /v1/chat/completions': {
          const out = await chat(parseJson(await readBody(req, maxBody)));
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
          throw new HttpError(['/health', '/v1/models', '/v1/chat/completions', '/pooling'].includes(path) ? 405 : 404, `no route ${route}`);
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
  logger.info('serve-llm listening', { port: address.port, model: name, labels: tagger.labels.length });

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
      await tagger.close();
      logger.info('serve-llm closed', { requests: stats.requests });
    })();
    return closing;
  };
  return { url, port: address.port, model: name, stats, close };
}

