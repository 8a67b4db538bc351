import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { cli } from '../helpers/cli.js';

/**
 * The CLI as people guess at it: `<command> --help`, `help <command>`, an
 * unknown option, a path that is not there, a config with several mistakes.
 * Every case is the real entry point in a child process; none loads a model.
 */
const _ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Written here, not read from the CLI's table, so a dropped or renamed option shows up. */
const OPTIONS: Record<string, string[]> = {
  run: ['--config'],
  demo: ['--notes', '--notes-file', '--model', '--format', '--policy', '--llm-model'],
  tag: ['--model'],
  eval: [
    '--model',
    '--data',
    '--format',
    '--json',
    '--tagger',
    '--llm-adapter',
    '--llm-url',
    '--llm-model',
    '--policy',
    '--budget-ms',
    '--domain',
    '--note-sentences',
    '--granularity',
    '--predictions',
  ],
  frontier: ['--model', '--llm-model', '--data', '--format', '--out', '--domain', '--note-sentences'],
  calibrate: ['--config', '--data', '--format', '--out', '--domain', '--limit', '--seed', '--bootstrap'],
  'serve-llm': ['--model', '--port', '--host', '--api-key-file', '--served-model-name', '--lora-modules'],
};

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bioner-cli-usage-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test("<command> --help prints that command's usage and every option, exit 0", async () => {
  for (const [command, options] of Object.entries(OPTIONS)) {
    const r = await cli([command, '--help']);
    assert.equal(r.code, 0, `${command} --help: ${r.stderr}`);
    assert.equal(r.stderr, '');
    assert.ok(r.stdout.startsWith(`usage: bioner-router ${command}`), r.stdout);
    for (const option of [...options, '--help']) assert.match(r.stdout, new RegExp(`(^|\\s)${option}(\\s|$)`, 'm'), `${command} --help names ${option}`);
  }
  // -h and `help <command>` print the same text.
  const long = await cli(['tag', '--help']);
  assert.deepEqual(await cli(['tag', '-h']), long);
  assert.deepEqual(await cli(['help', 'tag']), long);
  assert.match(long.stdout, /^arguments:\n {2}FILE /m, 'the positional is described');
  // --help wins over a mistake next to it.
  const withTypo = await cli(['eval', '--bogus', '--help']);
  assert.equal(withTypo.code, 0);
  assert.equal(withTypo.stdout, (await cli(['eval', '--help'])).stdout);
});

test('--help, -h, help and no command print the overview of every command, exit 0', async () => {
  const overview = await cli(['--help']);
  assert.equal(overview.code, 0);
  for (const command of Object.keys(OPTIONS)) assert.match(overview.stdout, new RegExp(`^ {2}${command} +\\S`, 'm'), command);
  assert.match(overview.stdout, /bioner-router <command> --help/);
  for (const args of [['-h'], ['help'], []]) assert.deepEqual(await cli(args), overview, args.join(' '));
  const unknown = await cli(['help', 'frobnicate']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^bioner-router: unknown command "frobnicate"\n/);
});

test("an unknown option: exit 2, one line naming it, then that command's usage", async () => {
  for (const [command, option] of [
    ['eval', '--bogus'],
    ['demo', '--note'],
    ['serve-llm', '--prot'],
  ]) {
    const r = await cli([command, option]);
    assert.equal(r.code, 2, `${command} ${option}`);
    assert.equal(r.stdout, '');
    const [first, blank, usage] = r.stderr.split('\n');
    assert.match(first, new RegExp(`^bioner-router: Unknown option '${option}'`));
    assert.equal(blank, '');
    assert.ok(usage.startsWith(`usage: bioner-router ${command} `), usage);
    assert.ok(r.stderr.includes(`'bioner-router ${command} --help'`), r.stderr);
    assert.ok(!r.stderr.includes('commands:'), "the command's usage, not the overview");
  }
});

test('a missing input file is one line naming the option and the path, exit 1, no stack', async () => {
  const missing = join(dir, 'no-such');
  const text = join(dir, 'note.txt');
  await writeFile(text, 'Patient received cisplatin.\n');
  const cases: Array<{ args: string[]; line: string }> = [
    { args: ['run', '--config', missing], line: `--config: file not found: ${missing}` },
    { args: ['tag', missing], line: `FILE: file not found: ${missing}` },
    { args: ['tag', '--model', missing, text], line: `--model: model directory not found: ${missing}` },
    { args: ['eval', '--data', missing], line: `--data: file or directory not found: ${missing}` },
    { args: ['eval', '--data', text, '--model', missing], line: `--model: model directory not found: ${missing}` },
    { args: ['eval', '--tagger', 'router', '--data', text, '--llm-model', missing], line: `--llm-model: model directory not found: ${missing}` },
    { args: ['demo', '--notes-file', missing], line: `--notes-file: file not found: ${missing}` },
    { args: ['frontier', '--data', missing], line: `--data: file or directory not found: ${missing}` },
    { args: ['serve-llm', '--model', missing], line: `--model: model directory not found: ${missing}` },
    { args: ['serve-llm', '--api-key-file', missing], line: `--api-key-file: file not found: ${missing}` },
    // Present but the wrong kind of thing.
    { args: ['run', '--config', dir], line: `--config: is a directory, expected a file: ${dir}` },
    { args: ['tag', '--model', dir, text], line: `--model: not a model bundle (no config.json): ${dir}` },
  ];
  for (const { args, line } of cases) {
    const r = await cli(args);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr, `bioner-router: ${line}\n`, args.join(' '));
    assert.equal(r.stdout, '');
  }
  // A `--llm-model` that is a served model name (remote adapter), not a directory, is not checked as a path.
  const name = await cli([
    'eval',
    '--tagger',
    'llm',
    '--llm-adapter',
    'openai',
    '--llm-url',
    'http://127.0.0.1:1',
    '--llm-model',
    'served-name',
    '--data',
    missing,
  ]);
  assert.equal(name.stderr, `bioner-router: --data: file or directory not found: ${missing}\n`);
});

test('run --config: every problem of the config on its own line, exit 1', async () => {
  const cfg = join(dir, 'three.yaml');
  await writeFile(cfg, ['input:', '  format: xml', '  topik: notes', 'processing:', '  concurrency: 100', '  maxInFlight: 10', ''].join('\n'));
  const r = await cli(['run', '--config', cfg]);
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.trimEnd().split('\n');
  assert.deepEqual(
    lines.map((l) => /^bioner-router: CONFIG_INVALID: config field "([^"]+)": \S/.exec(l)?.[1]),
    ['input.format', 'input.topik', 'processing.concurrency'],
    r.stderr,
  );
});
