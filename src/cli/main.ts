#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { RouterError } from '../errors.js';
import { POLICY_NAMES, type PolicyName } from '../route/index.js';
import { demoCommand } from './demo.js';
import { evalCommand } from './eval.js';
import { evalRouterCommand, frontierCommand } from './router-eval.js';
import { runCommand } from './run.js';
import { serveLlmCommand } from './serve-llm.js';
import { tagCommand } from './tag.js';

const USAGE = `bioner-router <command> [options]

Commands:
  run --config FILE                 consume clinical notes from Kafka, tag, publish Avro (config: YAML or JSON; BIONER_* env overrides)
  demo [--notes N] [--notes-file F] [--model DIR] [--format json|avro] [--policy encoder|llm|length-aware|cascade] [--llm-model DIR]
                                    embedded mock Kafka + the bundled model, end to end; last line is a JSON summary
                                    (--policy other than encoder: the in-process reference decoder as the LLM, encoder fallback)
  tag [--model DIR] [FILE]          tag a text file (or stdin) and print JSON spans
  eval [--tagger encoder|llm] --model DIR --data PATH --format iob|standoff [--json]
       [--llm-adapter onnx|openai|vllm-pooling --llm-url URL [--llm-model NAME]]
                                    strict entity-level P/R/F1 overall, per label, per entity length;
                                    --tagger llm scores the LLM route (--model: the LLM bundle; in-process
                                    unless --llm-adapter names a remote adapter at --llm-url)
  eval --tagger router --model ENCODER_DIR --llm-model LLM_DIR --policy P --budget-ms B --data PATH --format iob|standoff [--json]
       [--granularity sentence|note] [--domain D] [--note-sentences K]
                                    the router live over both in-process taggers, one note after another; adds llm_share
                                    and cost_ms_per_sentence (IOB corpora: K consecutive sentences make a note, default 10)
  frontier --model ENCODER_DIR --llm-model LLM_DIR --data PATH --format iob|standoff [--out DIR] [--domain D]
                                    sweeps policies x budgets (replayed on measured costs), writes DIR/<domain>.svg/.csv/.json
  serve-llm [--model DIR] [--port P] [--host H] [--api-key-file F]
                                    the reference decoder behind /v1/chat/completions and /pooling
                                    (vLLM's shapes); prints the bound URL on one line (--port 0: a free port)
`;

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'run': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string', short: 'c' } } });
      await runCommand(values.config);
      return;
    }
    case 'demo': {
      const { values } = parseArgs({ args: rest, options: { notes: { type: 'string', default: '20' }, 'notes-file': { type: 'string' }, model: { type: 'string' }, format: { type: 'string', default: 'json' }, policy: { type: 'string', default: 'encoder' }, 'llm-model': { type: 'string' } } });
      const notes = Number(values.notes);
      if (!Number.isInteger(notes) || notes < 1) throw new UsageError('--notes must be a positive integer');
      if (values.format !== 'json' && values.format !== 'avro') throw new UsageError('--format must be json or avro');
      if (!(POLICY_NAMES as readonly string[]).includes(values.policy ?? '')) throw new UsageError(`--policy must be one of ${POLICY_NAMES.join(', ')}`);
      await demoCommand({ notes, notesFile: values['notes-file'], model: values.model, format: values.format, policy: values.policy as PolicyName, llmModel: values['llm-model'] });
      return;
    }
    case 'tag': {
      const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { model: { type: 'string', short: 'm' } } });
      await tagCommand(values.model, positionals[0]);
      return;
    }
    case 'eval': {
      const { values } = parseArgs({
        args: rest,
        options: {
          model: { type: 'string', short: 'm' },
          data: { type: 'string' },
          format: { type: 'string', default: 'iob' },
          json: { type: 'boolean', default: false },
          tagger: { type: 'string', default: 'encoder' },
          'llm-adapter': { type: 'string' },
          'llm-url': { type: 'string' },
          'llm-model': { type: 'string' },
          policy: { type: 'string' },
          'budget-ms': { type: 'string' },
          domain: { type: 'string' },
          'note-sentences': { type: 'string' },
          granularity: { type: 'string' },
        },
      });
      if (values.data === undefined) throw new UsageError('eval needs --data PATH');
      if (values.tagger === 'router') {
        const budgetMs = Number(values['budget-ms'] ?? '1000');
        if (!(budgetMs > 0)) throw new UsageError('--budget-ms must be a positive number of milliseconds');
        const noteSentences = Number(values['note-sentences'] ?? '10');
        if (!Number.isInteger(noteSentences) || noteSentences < 1) throw new UsageError('--note-sentences must be a positive integer');
        await evalRouterCommand({ model: values.model, llmModel: values['llm-model'], data: values.data, format: values.format ?? 'iob', json: values.json ?? false, policy: values.policy ?? 'length-aware', budgetMs, domain: values.domain, noteSentences, granularity: values.granularity });
        return;
      }
      if (values.policy !== undefined || values['budget-ms'] !== undefined) throw new UsageError('--policy and --budget-ms need --tagger router');
      if (values.tagger !== 'encoder' && values.tagger !== 'llm') throw new UsageError('--tagger must be encoder, llm or router');
      const adapter = values['llm-adapter'];
      if (adapter !== undefined && adapter !== 'onnx' && adapter !== 'openai' && adapter !== 'vllm-pooling') throw new UsageError('--llm-adapter must be onnx, openai or vllm-pooling');
      if (values.tagger !== 'llm' && (adapter !== undefined || values['llm-url'] !== undefined)) throw new UsageError('--llm-adapter and --llm-url need --tagger llm');
      if ((adapter === 'openai' || adapter === 'vllm-pooling') && values['llm-url'] === undefined) throw new UsageError(`--llm-adapter ${adapter} needs --llm-url URL`);
      await evalCommand({
        model: values.model,
        data: values.data,
        format: values.format ?? 'iob',
        json: values.json ?? false,
        tagger: values.tagger,
        llmAdapter: adapter,
        llmUrl: values['llm-url'],
        llmModel: values['llm-model'],
      });
      return;
    }
    case 'frontier': {
      const { values } = parseArgs({
        args: rest,
        options: { model: { type: 'string', short: 'm' }, 'llm-model': { type: 'string' }, data: { type: 'string' }, format: { type: 'string', default: 'iob' }, out: { type: 'string' }, domain: { type: 'string' }, 'note-sentences': { type: 'string' } },
      });
      if (values.data === undefined) throw new UsageError('frontier needs --data PATH');
      const noteSentences = Number(values['note-sentences'] ?? '10');
      if (!Number.isInteger(noteSentences) || noteSentences < 1) throw new UsageError('--note-sentences must be a positive integer');
      await frontierCommand({ model: values.model, llmModel: values['llm-model'], data: values.data, format: values.format ?? 'iob', out: values.out, domain: values.domain, noteSentences });
      return;
    }
    case 'serve-llm': {
      const { values } = parseArgs({ args: rest, options: { model: { type: 'string', short: 'm', default: 'models/bc5cdr-llm' }, port: { type: 'string', default: '8000' }, host: { type: 'string', default: '127.0.0.1' }, 'api-key-file': { type: 'string' } } });
      const port = Number(values.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError('--port must be an integer in 0..65535');
      await serveLlmCommand({ model: values.model ?? 'models/bc5cdr-llm', port, host: values.host ?? '127.0.0.1', apiKeyFile: values['api-key-file'] });
      return;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

class UsageError extends Error {}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError || (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
    process.stderr.write(`bioner-router: ${err.message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (err instanceof RouterError) {
    process.stderr.write(`bioner-router: ${err.code}: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`bioner-router: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
