#!/usr/bin/env node
import './warnings.js';
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { InputNotFoundError, RouterError, UsageError } from '../errors.js';
import { LLM_ADAPTERS } from '../config/schema.js';
import { POLICY_NAMES, type PolicyName } from '../route/index.js';
import { packageRoot } from '../schemas.js';
import { calibrateCommand } from './calibrate.js';
import { demoCommand } from './demo.js';
import { evalCommand } from './eval.js';
import { evalRouterCommand, frontierCommand } from './router-eval.js';
import { runCommand } from './run.js';
import { serveLlmCommand } from './serve-llm.js';
import { tagCommand } from './tag.js';

/**
 * What an argument names on disk, checked before a command loads anything so a
 * typo costs one line, not a model load and a stack trace: `file`, `data` (an
 * IOB file or a standoff directory) or `model` (a bundle directory with
 * config.json, looked up as given and then inside the package, as the loaders do).
 */
type PathKind = 'file' | 'data' | 'model';

interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly short?: string;
  readonly default?: string | boolean;
  /** Placeholder shown in the help: FILE, DIR, N. */
  readonly arg?: string;
  readonly help: string;
  readonly path?: PathKind;
}

interface CommandSpec {
  /** One line for the overview. */
  readonly summary: string;
  readonly usage: readonly string[];
  readonly description: readonly string[];
  readonly positional?: { readonly name: string; readonly help: string; readonly path: PathKind };
  /** Passed to parseArgs as is (it ignores arg/help/path); one entry per option, so adding one is one line. */
  readonly options: { readonly [name: string]: OptionSpec };
}

const POLICIES = POLICY_NAMES.join('|');

const COMMANDS = {
  run: {
    summary: 'consume clinical notes from Kafka, tag them, publish Avro',
    usage: ['run [--config FILE]'],
    description: [
      'The long-running consumer: tags each note, publishes a record of schemas/tagged-note.avsc,',
      'dead-letters unusable records; drains on SIGTERM. Config: YAML or JSON, BIONER_* environment',
      'variables override it (every option: docs/configuration.md); deploy/router.example.yaml is an example.',
    ],
    options: {
      config: { type: 'string', short: 'c', arg: 'FILE', help: 'config file, YAML or JSON (default: defaults and BIONER_* variables only)', path: 'file' },
    },
  },
  demo: {
    summary: 'embedded mock Kafka + the bundled models, end to end; last line is a JSON summary',
    usage: ['demo [--notes N] [--notes-file FILE] [--model DIR] [--format json|avro] [--policy P] [--llm-model DIR]'],
    description: [
      'Starts a mock Kafka cluster, produces N notes and 5 malformed records, runs the router, reads',
      'the output and dead-letter topics back and prints a table, routing and metrics summaries, then',
      'one JSON line. Progress goes to stderr.',
    ],
    options: {
      notes: { type: 'string', default: '20', arg: 'N', help: 'notes to produce, cycled from the notes file' },
      'notes-file': {
        type: 'string',
        arg: 'FILE',
        help: 'JSON lines with "text", or a CSV with a "transcription" column (default: the bundled mtsamples notes)',
        path: 'file',
      },
      model: { type: 'string', arg: 'DIR', help: 'encoder bundle (default models/bc5cdr-encoder)', path: 'model' },
      format: { type: 'string', default: 'json', arg: 'json|avro', help: 'wire format of the input records' },
      policy: {
        type: 'string',
        default: 'encoder',
        arg: POLICIES,
        help: 'routing policy; any but encoder uses the in-process reference decoder as the LLM, the encoder as fallback',
      },
      'llm-model': { type: 'string', arg: 'DIR', help: 'LLM bundle for the LLM route (default models/bc5cdr-generative)', path: 'model' },
    },
  },
  tag: {
    summary: 'tag a text file (or stdin) and print JSON spans',
    usage: ['tag [--model DIR] [FILE]'],
    description: ['Prints {"model", "spans": [{"start", "end", "label", "score", "text", "sentence", "route"}]}; offsets in code points.'],
    positional: { name: 'FILE', help: 'text file to tag; none or - reads stdin', path: 'file' },
    options: {
      model: { type: 'string', short: 'm', arg: 'DIR', help: 'encoder bundle (default models/bc5cdr-encoder)', path: 'model' },
    },
  },
  eval: {
    summary: 'strict entity-level P/R/F1 of the encoder, the LLM or the router on IOB or brat standoff data',
    usage: [
      'eval [--tagger encoder|llm] [--model DIR] --data PATH [--format iob|standoff] [--json] [--predictions FILE]',
      '     [--llm-adapter onnx|openai|vllm-pooling --llm-url URL [--llm-model NAME]]',
      'eval --tagger router [--model ENCODER_DIR] [--llm-model LLM_DIR] [--policy P] [--budget-ms B] --data PATH',
      '     [--format iob|standoff] [--json] [--granularity sentence|note] [--domain D] [--note-sentences K]',
    ],
    description: [
      'Scores overall, per label and per entity length in tokens. --tagger llm scores the LLM route',
      '(in-process unless --llm-adapter names a remote adapter at --llm-url); --tagger router runs the',
      'router live over both in-process taggers and adds llm_share and cost_ms_per_sentence.',
    ],
    options: {
      model: {
        type: 'string',
        short: 'm',
        arg: 'DIR',
        help: 'encoder bundle (default models/bc5cdr-encoder); with --tagger llm the LLM bundle (default models/bc5cdr-generative)',
        path: 'model',
      },
      data: { type: 'string', arg: 'PATH', help: 'gold data (required): an IOB file (token<TAB>tag) or a directory of brat .txt/.ann pairs', path: 'data' },
      format: { type: 'string', default: 'iob', arg: 'iob|standoff', help: 'format of --data' },
      json: { type: 'boolean', default: false, help: 'also print the scores as one JSON line (the last line)' },
      tagger: { type: 'string', default: 'encoder', arg: 'encoder|llm|router', help: 'what to score' },
      'llm-adapter': { type: 'string', arg: LLM_ADAPTERS.join('|'), help: 'with --tagger llm: in-process (onnx, default) or a server at --llm-url' },
      'llm-url': { type: 'string', arg: 'URL', help: 'server root for the openai and vllm-pooling adapters' },
      // Not path-checked here: a served model name with a remote adapter, a bundle directory with --tagger router.
      'llm-model': {
        type: 'string',
        arg: 'NAME|DIR',
        help: 'remote adapters: the served model name; --tagger router: the LLM bundle (default models/bc5cdr-generative)',
      },
      policy: { type: 'string', arg: 'P', help: `--tagger router: ${POLICY_NAMES.join(', ')} (default length-aware)` },
      'budget-ms': { type: 'string', arg: 'B', help: '--tagger router: latency budget per note in ms (default 1000)' },
      domain: { type: 'string', arg: 'D', help: '--tagger router: calibration domain (default: from the encoder name, e.g. bc5cdr)' },
      'note-sentences': { type: 'string', arg: 'K', help: '--tagger router, IOB data: consecutive sentences that make a note (default 10)' },
      granularity: { type: 'string', arg: 'sentence|note', help: '--tagger router: route each sentence or whole notes (default sentence)' },
      predictions: { type: 'string', arg: 'FILE', help: '--format iob only: write conlleval input ("token gold pred" lines) to FILE' },
    },
  },
  frontier: {
    summary: 'sweep policies x budgets over both taggers; writes DIR/<domain>.svg, .csv and .json',
    usage: ['frontier [--model ENCODER_DIR] [--llm-model LLM_DIR] --data PATH [--format iob|standoff] [--out DIR] [--domain D] [--note-sentences K]'],
    description: ['Tags the data once with each tagger, replays every policy x budget on the measured costs and', 'prints the summary as one JSON line.'],
    options: {
      model: { type: 'string', short: 'm', arg: 'DIR', help: 'encoder bundle (default models/bc5cdr-encoder)', path: 'model' },
      'llm-model': { type: 'string', arg: 'DIR', help: 'LLM bundle (default models/bc5cdr-generative)', path: 'model' },
      data: { type: 'string', arg: 'PATH', help: 'gold data (required): an IOB file or a directory of brat .txt/.ann pairs', path: 'data' },
      format: { type: 'string', default: 'iob', arg: 'iob|standoff', help: 'format of --data' },
      out: { type: 'string', arg: 'DIR', help: 'output directory, created if missing (default ./frontier)' },
      domain: { type: 'string', arg: 'D', help: 'calibration domain (default: from the encoder name)' },
      'note-sentences': { type: 'string', arg: 'K', help: 'IOB data: consecutive sentences that make a note (default 10)' },
    },
  },
  calibrate: {
    summary: "measure the configured encoder and LLM on labeled data; write the domain's calibration entry",
    usage: ['calibrate --config FILE --data PATH [--format iob|standoff] [--out FILE] [--domain NAME]', '          [--limit N] [--seed S] [--bootstrap B]'],
    description: [
      "Runs encoder.* and the llm.* adapter (onnx, openai, vllm-pooling) over the data with the service's",
      "concurrency, then writes or merges the domain's entry of the calibration file the router reads: strict",
      'F1 per route and entity length (1, 2, 3+ tokens) with bootstrap 95% intervals, the gain per bucket, each',
      "route's per-call latency line (overhead + ms/token, p50, p95) and the openai realignment counts.",
      'Progress on stderr; SIGINT stops and writes what was measured, marked partial (exit 130).',
    ],
    options: {
      config: {
        type: 'string',
        short: 'c',
        arg: 'FILE',
        help: 'router config (YAML or JSON); encoder, llm and processing.concurrency are read from it',
        path: 'file',
      },
      data: { type: 'string', arg: 'PATH', help: 'labeled data (required): an IOB file or a directory of brat .txt/.ann pairs', path: 'data' },
      format: { type: 'string', default: 'iob', arg: 'iob|standoff', help: 'format of --data' },
      out: { type: 'string', arg: 'FILE', help: 'calibration file to write or merge into (default routing.calibrationFile)' },
      domain: { type: 'string', arg: 'NAME', help: 'the entry to write (default routing.domain)' },
      limit: { type: 'string', arg: 'N', help: 'at most N sentences (standoff: whole documents up to N sentences)' },
      seed: { type: 'string', default: '1', arg: 'S', help: 'seed of the call sizes and the bootstrap' },
      bootstrap: { type: 'string', default: '1000', arg: 'B', help: 'bootstrap resamples for the 95% intervals' },
    },
  },
  'serve-llm': {
    summary: "the reference decoder behind vLLM's /v1/chat/completions, /v1/completions and /pooling",
    usage: ['serve-llm [--model DIR] [--port P] [--host H] [--api-key-file FILE] [--served-model-name NAME] [--lora-modules NAME=DIR,...]'],
    description: ['Prints the bound URL on one line; stops on SIGTERM.'],
    options: {
      model: { type: 'string', short: 'm', default: 'models/bc5cdr-generative', arg: 'DIR', help: 'LLM bundle to serve', path: 'model' },
      'served-model-name': { type: 'string', arg: 'NAME', help: 'name requests give as "model" (default: the bundle\'s name)' },
      'lora-modules': { type: 'string', arg: 'NAME=DIR,...', help: 'more bundles served under their own names, as vLLM serves LoRA adapters' },
      port: { type: 'string', default: '8000', arg: 'P', help: 'port; 0 picks a free one' },
      host: { type: 'string', default: '127.0.0.1', arg: 'H', help: 'address to listen on' },
      'api-key-file': { type: 'string', arg: 'FILE', help: 'require "Authorization: Bearer <key>", the key read from FILE', path: 'file' },
    },
  },
} as const satisfies Record<string, CommandSpec>;

type CommandName = keyof typeof COMMANDS;

const isCommand = (name: string): name is CommandName => Object.hasOwn(COMMANDS, name);

function overview(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length)) + 2;
  return [
    'usage: bioner-router <command> [options]',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([name, spec]: [string, CommandSpec]) => `  ${name.padEnd(width)}${spec.summary}`),
    '',
    "'bioner-router <command> --help' or 'bioner-router help <command>' shows a command's options.",
    '',
  ].join('\n');
}

/** A usage line starting with a space continues the one above it (aligned under its options). */
function usageLines(command: CommandName): string[] {
  const lead = 'usage: bioner-router ';
  return COMMANDS[command].usage.map((line, i) => (line.startsWith(' ') ? ' '.repeat(lead.length) : i === 0 ? lead : ' '.repeat(7) + 'bioner-router ') + line);
}

function commandHelp(command: CommandName): string {
  const spec: CommandSpec = COMMANDS[command];
  const rows: Array<[string, string]> = Object.entries(spec.options).map(([name, o]) => {
    const flag = `${o.short === undefined ? '    ' : `-${o.short}, `}--${name}${o.arg === undefined ? '' : ` ${o.arg}`}`;
    const byDefault = o.default === undefined || o.default === false ? '' : ` (default ${String(o.default)})`;
    return [flag, o.help + byDefault];
  });
  rows.push(['-h, --help', 'print this help']);
  const args: Array<[string, string]> = spec.positional === undefined ? [] : [[spec.positional.name, spec.positional.help]];
  // Long flags (the enum placeholders) put their text on the next line rather than widening every row.
  const width = Math.min(30, Math.max(...[...rows, ...args].map(([f]) => f.length))) + 2;
  const table = (list: Array<[string, string]>): string[] =>
    list.map(([f, h]) => (f.length + 2 > width ? `  ${f}\n  ${' '.repeat(width)}${h}` : `  ${f.padEnd(width)}${h}`));
  return [
    ...usageLines(command),
    '',
    ...spec.description,
    '',
    ...(args.length > 0 ? ['arguments:', ...table(args), ''] : []),
    'options:',
    ...table(rows),
    '',
  ].join('\n');
}

/** The command whose arguments are being read, so a usage error can show that command's usage. */
let activeCommand: CommandName | undefined;

/** Whether `--help`/`-h` is among the arguments (read leniently, so `eval --bogus --help` still helps). */
function wantsHelp(command: CommandName, args: string[]): boolean {
  const { tokens } = parseArgs({
    args,
    options: { ...COMMANDS[command].options, help: { type: 'boolean', short: 'h' } },
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  return tokens.some((t) => t.kind === 'option' && t.name === 'help');
}

/** Strict parse of a command's arguments; `options` is that command's table entry, passed in so the values keep their types. */
function parseCommand<O extends NonNullable<ParseArgsConfig['options']>>(command: CommandName, args: string[], options: O) {
  activeCommand = command;
  const spec: CommandSpec = COMMANDS[command];
  return parseArgs({ args, options, allowPositionals: spec.positional !== undefined, strict: true });
}

const REASONS: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOTDIR: 'not found',
  ENOENT: 'not found',
  ELOOP: 'too many symbolic links',
};

/** The one check of an input path; throws InputNotFoundError naming the option and the path as given. */
async function checkPath(what: string, path: string, kind: PathKind): Promise<void> {
  const noun = kind === 'model' ? 'model directory' : kind === 'data' ? 'file or directory' : 'file';
  const candidates = kind === 'model' ? [resolve(path), resolve(packageRoot, path)] : [resolve(path)];
  // A bundle is wherever the loaders will find one (the first candidate with a readable config.json).
  for (const at of kind === 'model' ? candidates : []) {
    if (
      await access(join(at, 'config.json'), constants.R_OK).then(
        () => true,
        () => false,
      )
    )
      return;
  }
  let found: { at: string; isDirectory: boolean } | undefined;
  let failure = 'ENOENT';
  for (const at of candidates) {
    try {
      found = { at, isDirectory: (await stat(at)).isDirectory() };
      break;
    } catch (err) {
      failure = (err as NodeJS.ErrnoException).code ?? 'ENOENT';
    }
  }
  if (found === undefined) {
    const reason = REASONS[failure] ?? failure;
    throw new InputNotFoundError(reason === 'not found' ? `${what}: ${noun} not found: ${path}` : `${what}: cannot read ${path} (${reason})`);
  }
  if (kind === 'file' && found.isDirectory) throw new InputNotFoundError(`${what}: is a directory, expected a file: ${path}`);
  if (kind === 'model' && !found.isDirectory) throw new InputNotFoundError(`${what}: not a directory, expected a model bundle: ${path}`);
  const target = kind === 'model' ? join(found.at, 'config.json') : found.at;
  try {
    await access(target, constants.R_OK | (found.isDirectory && kind !== 'model' ? constants.X_OK : 0));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    if (kind === 'model' && code === 'ENOENT') throw new InputNotFoundError(`${what}: not a model bundle (no config.json): ${path}`);
    throw new InputNotFoundError(`${what}: cannot read ${path} (${REASONS[code] ?? code})`);
  }
}

/** Checks every path argument the command's table marks, before the command starts. */
async function checkInputs(command: CommandName, values: Readonly<Record<string, unknown>>, positionals: readonly string[] = []): Promise<void> {
  const spec: CommandSpec = COMMANDS[command];
  for (const [name, option] of Object.entries(spec.options)) {
    const value = values[name];
    if (option.path !== undefined && typeof value === 'string') await checkPath(`--${name}`, value, option.path);
  }
  const first = positionals[0];
  if (spec.positional !== undefined && first !== undefined && first !== '-') await checkPath(spec.positional.name, first, spec.positional.path);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    const topic = rest[0];
    if (topic === undefined) process.stdout.write(overview());
    else if (isCommand(topic)) process.stdout.write(commandHelp(topic));
    else throw new UsageError(`unknown command "${topic}"`);
    return;
  }
  if (!isCommand(command)) throw new UsageError(`unknown command "${command}"`);
  if (wantsHelp(command, rest)) {
    process.stdout.write(commandHelp(command));
    return;
  }
  switch (command) {
    case 'run': {
      const { values } = parseCommand('run', rest, COMMANDS.run.options);
      await checkInputs('run', values);
      await runCommand(values.config);
      return;
    }
    case 'demo': {
      const { values } = parseCommand('demo', rest, COMMANDS.demo.options);
      const notes = Number(values.notes);
      if (!Number.isInteger(notes) || notes < 1) throw new UsageError('--notes must be a positive integer');
      if (values.format !== 'json' && values.format !== 'avro') throw new UsageError('--format must be json or avro');
      if (!(POLICY_NAMES as readonly string[]).includes(values.policy ?? '')) throw new UsageError(`--policy must be one of ${POLICY_NAMES.join(', ')}`);
      await checkInputs('demo', values);
      await demoCommand({
        notes,
        notesFile: values['notes-file'],
        model: values.model,
        format: values.format,
        policy: values.policy as PolicyName,
        llmModel: values['llm-model'],
      });
      return;
    }
    case 'tag': {
      const { values, positionals } = parseCommand('tag', rest, COMMANDS.tag.options);
      await checkInputs('tag', values, positionals);
      await tagCommand(values.model, positionals[0]);
      return;
    }
    case 'eval': {
      const { values } = parseCommand('eval', rest, COMMANDS.eval.options);
      if (values.data === undefined) throw new UsageError('eval needs --data PATH');
      if (values.predictions !== undefined && values.tagger === 'router') throw new UsageError('--predictions needs --tagger encoder or llm');
      if (values.predictions !== undefined && values.format !== 'iob') throw new UsageError('--predictions needs --format iob');
      if (values.tagger === 'router') {
        const budgetMs = Number(values['budget-ms'] ?? '1000');
        if (!(budgetMs > 0)) throw new UsageError('--budget-ms must be a positive number of milliseconds');
        const noteSentences = Number(values['note-sentences'] ?? '10');
        if (!Number.isInteger(noteSentences) || noteSentences < 1) throw new UsageError('--note-sentences must be a positive integer');
        await checkInputs('eval', values);
        // Only with the router is --llm-model a bundle directory.
        if (values['llm-model'] !== undefined) await checkPath('--llm-model', values['llm-model'], 'model');
        await evalRouterCommand({
          model: values.model,
          llmModel: values['llm-model'],
          data: values.data,
          format: values.format ?? 'iob',
          json: values.json ?? false,
          policy: values.policy ?? 'length-aware',
          budgetMs,
          domain: values.domain,
          noteSentences,
          granularity: values.granularity,
        });
        return;
      }
      if (values.policy !== undefined || values['budget-ms'] !== undefined) throw new UsageError('--policy and --budget-ms need --tagger router');
      if (values.tagger !== 'encoder' && values.tagger !== 'llm') throw new UsageError('--tagger must be encoder, llm or router');
      const adapterName = values['llm-adapter'];
      const adapter = LLM_ADAPTERS.find((a) => a === adapterName);
      if (adapterName !== undefined && adapter === undefined) throw new UsageError(`--llm-adapter must be one of ${LLM_ADAPTERS.join(', ')}`);
      if (values.tagger !== 'llm' && (adapter !== undefined || values['llm-url'] !== undefined))
        throw new UsageError('--llm-adapter and --llm-url need --tagger llm');
      if ((adapter === 'openai' || adapter === 'vllm-pooling') && values['llm-url'] === undefined)
        throw new UsageError(`--llm-adapter ${adapter} needs --llm-url URL`);
      await checkInputs('eval', values);
      await evalCommand({
        model: values.model,
        data: values.data,
        format: values.format ?? 'iob',
        json: values.json ?? false,
        tagger: values.tagger,
        llmAdapter: adapter,
        llmUrl: values['llm-url'],
        llmModel: values['llm-model'],
        predictions: values.predictions,
      });
      return;
    }
    case 'frontier': {
      const { values } = parseCommand('frontier', rest, COMMANDS.frontier.options);
      if (values.data === undefined) throw new UsageError('frontier needs --data PATH');
      const noteSentences = Number(values['note-sentences'] ?? '10');
      if (!Number.isInteger(noteSentences) || noteSentences < 1) throw new UsageError('--note-sentences must be a positive integer');
      await checkInputs('frontier', values);
      await frontierCommand({
        model: values.model,
        llmModel: values['llm-model'],
        data: values.data,
        format: values.format ?? 'iob',
        out: values.out,
        domain: values.domain,
        noteSentences,
      });
      return;
    }
    case 'calibrate': {
      const { values } = parseCommand('calibrate', rest, COMMANDS.calibrate.options);
      if (values.data === undefined) throw new UsageError('calibrate needs --data PATH');
      if (values.format !== 'iob' && values.format !== 'standoff') throw new UsageError('--format must be iob or standoff');
      const limit = values.limit === undefined ? undefined : Number(values.limit);
      if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) throw new UsageError('--limit must be a positive integer');
      const seed = Number(values.seed);
      if (!Number.isInteger(seed)) throw new UsageError('--seed must be an integer');
      const bootstrap = Number(values.bootstrap);
      if (!Number.isInteger(bootstrap) || bootstrap < 1) throw new UsageError('--bootstrap must be a positive integer');
      await checkInputs('calibrate', values);
      await calibrateCommand({
        config: values.config,
        data: values.data,
        format: values.format,
        out: values.out,
        domain: values.domain,
        limit,
        seed,
        bootstrap,
      });
      return;
    }
    case 'serve-llm': {
      const { values } = parseCommand('serve-llm', rest, COMMANDS['serve-llm'].options);
      const port = Number(values.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError('--port must be an integer in 0..65535');
      const loraModules: Record<string, string> = {};
      for (const item of (values['lora-modules'] ?? '').split(',').filter((x) => x.trim() !== '')) {
        const eq = item.indexOf('=');
        if (eq <= 0 || eq === item.length - 1) throw new UsageError('--lora-modules takes NAME=DIR pairs, comma-separated');
        loraModules[item.slice(0, eq).trim()] = item.slice(eq + 1).trim();
      }
      await checkInputs('serve-llm', values);
      for (const [name, dir] of Object.entries(loraModules)) await checkPath(`--lora-modules ${name}`, dir, 'model');
      await serveLlmCommand({
        model: values.model ?? 'models/bc5cdr-generative',
        port,
        host: values.host ?? '127.0.0.1',
        apiKeyFile: values['api-key-file'],
        servedName: values['served-model-name'],
        loraModules,
      });
      return;
    }
  }
}

/** A file-system error that escaped a command (a file removed after the check): its path and reason, no stack. */
function fileProblem(err: unknown): string | undefined {
  if (!(err instanceof Error) || !('code' in err) || !('path' in err) || typeof err.path !== 'string') return undefined;
  const reason = REASONS[String(err.code)];
  // Could be an output path too (--predictions in a missing directory), so no "file" in the words.
  return reason === undefined ? undefined : `${err.path}: ${reason === 'not found' ? 'no such file or directory' : reason}`;
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError || (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
    // One line naming the problem, then the usage of the command at hand (the overview when there is none).
    const usage =
      activeCommand === undefined ? overview() : [...usageLines(activeCommand), `'bioner-router ${activeCommand} --help' lists its options.`, ''].join('\n');
    process.stderr.write(`bioner-router: ${err.message}\n\n${usage}`);
    process.exit(2);
  }
  if (err instanceof InputNotFoundError) {
    process.stderr.write(`bioner-router: ${err.message}\n`);
    process.exit(1);
  }
  if (err instanceof RouterError) {
    // A config error lists several problems, one per line: each line gets the prefix, so each stands alone.
    process.stderr.write(
      err.message
        .split('\n')
        .map((line) => `bioner-router: ${err.code}: ${line}\n`)
        .join(''),
    );
    process.exit(1);
  }
  const file = fileProblem(err);
  if (file !== undefined) {
    process.stderr.write(`bioner-router: ${file}\n`);
    process.exit(1);
  }
  process.stderr.write(`bioner-router: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
